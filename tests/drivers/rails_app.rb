# Rails ActiveRecord with its defaults (prepared statements on, advisory
# locks on for migrations) through pgtenant in transaction mode.
# `rails_app.rb migrate` (run by `pgtenant migrate --each`): migrations from a
# folder with Rails' migration advisory lock, twice; prints the versions as
# one JSON line.
# `rails_app.rb`: model CRUD, `transaction do` with a rollback, 20 threads;
# prints one JSON line of results.
# Env: PGHOST, PGPORT, PGUSER, PGDATABASE (and PGPASSWORD on a migrate --each
# route, which libpq reads).
require "active_record"
require "json"

ActiveRecord::Base.establish_connection(
  adapter: "postgresql",
  host: ENV.fetch("PGHOST"),
  port: ENV.fetch("PGPORT"),
  username: ENV.fetch("PGUSER"),
  database: ENV.fetch("PGDATABASE"),
  pool: 25
)
if ARGV == ["migrate"]
  ActiveRecord::Migration.verbose = false
  paths = [File.join(__dir__, "rails_migrate")]
  context = ActiveRecord::MigrationContext.new(paths, ActiveRecord::SchemaMigration)
  context.migrate
  context.migrate # nothing to do
  versions = ActiveRecord::Base.connection.select_values("SELECT version FROM schema_migrations ORDER BY version")
  ActiveRecord::Base.connection_pool.disconnect!
  puts JSON.generate({ migrated: versions })
  exit 0
end

class ArItem < ActiveRecord::Base
end

ArItem.delete_all
100.times { |i| ArItem.create!(name: "row-#{i}", qty: i) }
first = ArItem.find_by!(name: "row-1")
first.update!(qty: 1)
begin
  ArItem.transaction do
    ArItem.create!(name: "rolled back")
    raise ActiveRecord::Rollback
  end
end
raise "rollback kept a row" if ArItem.where(name: "rolled back").exists?

errors = Queue.new
threads = 20.times.map do |n|
  Thread.new do
    ActiveRecord::Base.connection_pool.with_connection do
      20.times do
        ArItem.transaction do
          it = ArItem.create!(name: "w#{n}", qty: n)
          it.update!(qty: n + 1)
          it.destroy!
        end
      end
    end
  rescue StandardError => e
    errors << "thread #{n}: #{e.class}: #{e.message}"
  end
end
threads.each(&:join)
sum = ArItem.sum(:qty)
ActiveRecord::Base.connection_pool.disconnect!
errs = []
errs << errors.pop until errors.empty?
puts JSON.generate({ sum: sum, errors: errs })
