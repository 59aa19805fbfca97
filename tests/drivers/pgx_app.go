// Go pgx v4 with its defaults (a statement cache of named prepared
// statements, pgxpool sized to the CPUs) through pgtenant in transaction mode.
// `pgx_app migrate` (run by `pgtenant migrate --each`): the app's own
// versioned migrations (a version table, each version in a transaction under
// an advisory lock) on DATABASE_URL; prints the applied versions.
// `pgx_app`: CopyFrom (into a dedicated schema's table; on a shared table,
// where PostgreSQL refuses COPY FROM under row-level security, into a temp
// staging table then INSERT ... SELECT), a rolled-back transaction, 20
// goroutines over the pool; prints one JSON line of results.
// Env: PGHOST, PGPORT, PGUSER, PGDATABASE (pgx reads them).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"

	"github.com/jackc/pgx/v4"
	"github.com/jackc/pgx/v4/pgxpool"
)

// In the shared schema (pgtenant.target_mode = 'shared', as on a migrate
// --each route), rows carry the tenant's id and row-level security isolates
// them.
var migrations = []string{
	`CREATE TABLE gx_items (id bigserial PRIMARY KEY, name text NOT NULL, qty int NOT NULL DEFAULT 0);
	 DO $$ BEGIN IF current_setting('pgtenant.target_mode', true) = 'shared' THEN
	     ALTER TABLE gx_items ADD COLUMN tenant_id uuid NOT NULL DEFAULT pgtenant.current_tenant();
	     ALTER TABLE gx_items ENABLE ROW LEVEL SECURITY;
	     CREATE POLICY tenant_rows ON gx_items USING (tenant_id = (SELECT pgtenant.current_tenant()))
	         WITH CHECK (tenant_id = (SELECT pgtenant.current_tenant()));
	 END IF; END $$`,
	`CREATE INDEX gx_items_name ON gx_items (name)`,
}

func must(err error, what string) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
		os.Exit(1)
	}
}

func migrate(ctx context.Context) {
	conn, err := pgx.Connect(ctx, os.Getenv("DATABASE_URL"))
	must(err, "connect")
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS gx_schema_version (version int PRIMARY KEY)")
	must(err, "version table")
	for i, sql := range migrations {
		v := i + 1
		tx, err := conn.Begin(ctx)
		must(err, "begin")
		_, err = tx.Exec(ctx, "SELECT pg_advisory_xact_lock(74202)")
		must(err, "lock")
		var done bool
		must(tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM gx_schema_version WHERE version = $1)", v).Scan(&done), "read version")
		if !done {
			_, err = tx.Exec(ctx, sql)
			must(err, fmt.Sprintf("migration %d", v))
			_, err = tx.Exec(ctx, "INSERT INTO gx_schema_version (version) VALUES ($1)", v)
			must(err, "record version")
		}
		must(tx.Commit(ctx), "commit")
	}
	rows, err := conn.Query(ctx, "SELECT version FROM gx_schema_version ORDER BY version")
	must(err, "versions")
	versions := []int{}
	for rows.Next() {
		var v int
		must(rows.Scan(&v), "scan")
		versions = append(versions, v)
	}
	out, _ := json.Marshal(map[string][]int{"migrated": versions})
	fmt.Println(string(out))
}

func main() {
	ctx := context.Background()
	if len(os.Args) == 2 && os.Args[1] == "migrate" {
		migrate(ctx)
		return
	}
	pool, err := pgxpool.Connect(ctx, "")
	must(err, "pool")
	defer pool.Close()
	_, err = pool.Exec(ctx, "DELETE FROM gx_items")
	must(err, "clear")
	rows := make([][]interface{}, 100)
	for i := range rows {
		rows[i] = []interface{}{fmt.Sprintf("row-%d", i), int32(i)}
	}
	var rls bool
	must(pool.QueryRow(ctx, "SELECT relrowsecurity FROM pg_class WHERE oid = 'gx_items'::regclass").Scan(&rls), "rls")
	copyPath := "direct"
	if rls {
		// The staging pattern: one connection, so the temp table stays with it.
		copyPath = "staging"
		conn, err := pool.Acquire(ctx)
		must(err, "acquire")
		_, err = conn.Exec(ctx, "CREATE TEMP TABLE gx_staging (name text, qty int)")
		must(err, "staging table")
		n, err := conn.CopyFrom(ctx, pgx.Identifier{"gx_staging"}, []string{"name", "qty"}, pgx.CopyFromRows(rows))
		must(err, "copy into staging")
		if n != 100 {
			must(fmt.Errorf("copied %d", n), "copy into staging")
		}
		_, err = conn.Exec(ctx, "INSERT INTO gx_items (name, qty) SELECT name, qty FROM gx_staging")
		must(err, "insert from staging")
		_, err = conn.Exec(ctx, "DROP TABLE gx_staging")
		must(err, "drop staging")
		conn.Release()
	} else {
		n, err := pool.CopyFrom(ctx, pgx.Identifier{"gx_items"}, []string{"name", "qty"}, pgx.CopyFromRows(rows))
		must(err, "copy")
		if n != 100 {
			must(fmt.Errorf("copied %d", n), "copy")
		}
	}
	tx, err := pool.Begin(ctx)
	must(err, "begin")
	_, err = tx.Exec(ctx, "INSERT INTO gx_items (name) VALUES ('rolled back')")
	must(err, "insert in tx")
	must(tx.Rollback(ctx), "rollback")

	var mu sync.Mutex
	errors := []string{}
	var wg sync.WaitGroup
	for n := 0; n < 20; n++ {
		wg.Add(1)
		go func(n int) {
			defer wg.Done()
			for k := 0; k < 20; k++ {
				err := func() error {
					tx, err := pool.Begin(ctx)
					if err != nil {
						return err
					}
					defer tx.Rollback(ctx)
					var id int64
					if err := tx.QueryRow(ctx, "INSERT INTO gx_items (name, qty) VALUES ($1, $2) RETURNING id", fmt.Sprintf("w%d", n), n).Scan(&id); err != nil {
						return err
					}
					if _, err := tx.Exec(ctx, "UPDATE gx_items SET qty = qty + 1 WHERE id = $1", id); err != nil {
						return err
					}
					if _, err := tx.Exec(ctx, "DELETE FROM gx_items WHERE id = $1", id); err != nil {
						return err
					}
					return tx.Commit(ctx)
				}()
				if err != nil {
					mu.Lock()
					errors = append(errors, fmt.Sprintf("goroutine %d: %v", n, err))
					mu.Unlock()
					return
				}
			}
		}(n)
	}
	wg.Wait()
	var sum int64
	must(pool.QueryRow(ctx, "SELECT coalesce(sum(qty), 0) FROM gx_items").Scan(&sum), "sum")
	out, _ := json.Marshal(map[string]interface{}{"sum": sum, "copy": copyPath, "errors": errors})
	fmt.Println(string(out))
}
