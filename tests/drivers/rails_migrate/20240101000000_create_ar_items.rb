class CreateArItems < ActiveRecord::Migration[6.1]
  def change
    create_table :ar_items do |t|
      t.string :name, null: false
      t.integer :qty, null: false, default: 0
    end
  end
end
