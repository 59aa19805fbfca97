class IndexArItems < ActiveRecord::Migration[6.1]
  def change
    add_index :ar_items, :name
  end
end
