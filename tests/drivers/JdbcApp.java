// pgjdbc with its defaults (prepareThreshold=5: a statement run a fifth time
// becomes a named server-side statement) and HikariCP with its defaults (a
// pool of 10), through pgtenant in transaction mode.
// `JdbcApp.java migrate` (run by `pgtenant migrate --each`): the app's own
// versioned migrations, Flyway-style (a version table, each version in a
// transaction under an advisory lock); prints the applied versions.
// `JdbcApp.java`: a PreparedStatement run 100 times, a batch insert,
// setTransactionIsolation(SERIALIZABLE) with a rollback, 20 threads over the
// pool; prints one JSON line of results.
// Env: PGHOST, PGPORT, PGUSER, PGDATABASE (and PGPASSWORD on a migrate --each
// route); pgjdbc reads no environment, so the URL is built from them.
import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

public class JdbcApp {
    // In the shared schema (pgtenant.target_mode = 'shared', as on a migrate
    // --each route), rows carry the tenant's id and row-level security
    // isolates them.
    static final String[] MIGRATIONS = {
        "CREATE TABLE jd_items (id bigserial PRIMARY KEY, name text NOT NULL, qty int NOT NULL DEFAULT 0);"
            + "DO $$ BEGIN IF current_setting('pgtenant.target_mode', true) = 'shared' THEN "
            + "ALTER TABLE jd_items ADD COLUMN tenant_id uuid NOT NULL DEFAULT pgtenant.current_tenant();"
            + "ALTER TABLE jd_items ENABLE ROW LEVEL SECURITY;"
            + "CREATE POLICY tenant_rows ON jd_items USING (tenant_id = (SELECT pgtenant.current_tenant()))"
            + " WITH CHECK (tenant_id = (SELECT pgtenant.current_tenant()));"
            + "END IF; END $$",
        "CREATE INDEX jd_items_name ON jd_items (name)",
    };

    static String url() {
        return "jdbc:postgresql://" + System.getenv("PGHOST") + ":" + System.getenv("PGPORT") + "/"
            + System.getenv("PGDATABASE");
    }

    static String password() {
        String p = System.getenv("PGPASSWORD");
        return p == null ? "" : p;
    }

    static void migrate() throws Exception {
        try (Connection c = DriverManager.getConnection(url(), System.getenv("PGUSER"), password())) {
            try (Statement s = c.createStatement()) {
                s.execute("CREATE TABLE IF NOT EXISTS jd_schema_version (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())");
            }
            c.setAutoCommit(false);
            for (int v = 1; v <= MIGRATIONS.length; v++) {
                try (Statement s = c.createStatement()) {
                    s.execute("SELECT pg_advisory_xact_lock(74201)");
                    boolean done;
                    try (PreparedStatement q = c.prepareStatement("SELECT 1 FROM jd_schema_version WHERE version = ?")) {
                        q.setInt(1, v);
                        try (ResultSet r = q.executeQuery()) {
                            done = r.next();
                        }
                    }
                    if (!done) {
                        s.execute(MIGRATIONS[v - 1]);
                        try (PreparedStatement ins = c.prepareStatement("INSERT INTO jd_schema_version (version) VALUES (?)")) {
                            ins.setInt(1, v);
                            ins.executeUpdate();
                        }
                    }
                }
                c.commit();
            }
            List<String> versions = new ArrayList<>();
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT version FROM jd_schema_version ORDER BY version")) {
                while (r.next()) versions.add(Integer.toString(r.getInt(1)));
            }
            c.commit();
            System.out.println("{\"migrated\":[" + String.join(",", versions) + "]}");
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length == 1 && args[0].equals("migrate")) {
            migrate();
            return;
        }
        HikariConfig hc = new HikariConfig();
        hc.setJdbcUrl(url());
        hc.setUsername(System.getenv("PGUSER"));
        hc.setPassword(password());
        List<String> errors = Collections.synchronizedList(new ArrayList<>());
        String isolation;
        long sum;
        try (HikariDataSource ds = new HikariDataSource(hc)) {
            try (Connection c = ds.getConnection(); Statement s = c.createStatement()) {
                s.executeUpdate("DELETE FROM jd_items");
                // Run 100 times: server-prepared from the fifth.
                try (PreparedStatement ins = c.prepareStatement("INSERT INTO jd_items (name, qty) VALUES (?, ?)")) {
                    for (int i = 0; i < 50; i++) {
                        ins.setString(1, "row-" + i);
                        ins.setInt(2, i);
                        ins.executeUpdate();
                    }
                    // The second half as one batch.
                    for (int i = 50; i < 100; i++) {
                        ins.setString(1, "row-" + i);
                        ins.setInt(2, i);
                        ins.addBatch();
                    }
                    int[] counts = ins.executeBatch();
                    if (counts.length != 50) throw new IllegalStateException("batch ran " + counts.length);
                }
                try (PreparedStatement q = c.prepareStatement("SELECT qty FROM jd_items WHERE name = ?")) {
                    for (int i = 0; i < 100; i++) {
                        q.setString(1, "row-" + i);
                        try (ResultSet r = q.executeQuery()) {
                            if (!r.next() || r.getInt(1) != i) throw new IllegalStateException("row-" + i);
                        }
                    }
                }
            }
            try (Connection c = ds.getConnection()) {
                c.setAutoCommit(false);
                c.setTransactionIsolation(Connection.TRANSACTION_SERIALIZABLE);
                try (Statement s = c.createStatement()) {
                    s.executeUpdate("INSERT INTO jd_items (name) VALUES ('rolled back')");
                    try (ResultSet r = s.executeQuery("SHOW transaction_isolation")) {
                        r.next();
                        isolation = r.getString(1);
                    }
                }
                c.rollback();
                c.setTransactionIsolation(Connection.TRANSACTION_READ_COMMITTED);
                c.setAutoCommit(true);
            }
            List<Thread> threads = new ArrayList<>();
            for (int n = 0; n < 20; n++) {
                final int w = n;
                Thread t = new Thread(() -> {
                    try {
                        for (int k = 0; k < 20; k++) {
                            try (Connection c = ds.getConnection()) {
                                c.setAutoCommit(false);
                                long id;
                                try (PreparedStatement ins = c.prepareStatement("INSERT INTO jd_items (name, qty) VALUES (?, ?) RETURNING id")) {
                                    ins.setString(1, "w" + w);
                                    ins.setInt(2, w);
                                    try (ResultSet r = ins.executeQuery()) {
                                        r.next();
                                        id = r.getLong(1);
                                    }
                                }
                                try (PreparedStatement up = c.prepareStatement("UPDATE jd_items SET qty = qty + 1 WHERE id = ?")) {
                                    up.setLong(1, id);
                                    up.executeUpdate();
                                }
                                try (PreparedStatement del = c.prepareStatement("DELETE FROM jd_items WHERE id = ?")) {
                                    del.setLong(1, id);
                                    del.executeUpdate();
                                }
                                c.commit();
                            }
                        }
                    } catch (Exception e) {
                        errors.add("thread " + w + ": " + e);
                    }
                });
                threads.add(t);
                t.start();
            }
            for (Thread t : threads) t.join();
            try (Connection c = ds.getConnection(); Statement s = c.createStatement();
                 ResultSet r = s.executeQuery("SELECT sum(qty) FROM jd_items WHERE name <> 'rolled back'")) {
                r.next();
                sum = r.getLong(1);
            }
        }
        StringBuilder errs = new StringBuilder();
        for (String e : errors) {
            if (errs.length() > 0) errs.append(",");
            errs.append('"').append(e.replace("\\", "\\\\").replace("\"", "\\\"")).append('"');
        }
        System.out.println("{\"sum\":" + sum + ",\"isolation\":\"" + isolation + "\",\"errors\":[" + errs + "]}");
    }
}
