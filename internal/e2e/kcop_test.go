package e2e

import (
	"context"
	crand "crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cdcd-dev/cdcd/internal/testenv"
	"github.com/cdcd-dev/cdcd/kcop"
)

// TestKCOPChainEndToEnd: one chain writes every change whole to a restricted topic (JSON with
// headers from audit fields and a column, and Avro through the registry), a json-audit record to a
// per-table topic override, the email encrypted to a third topic, a masked projection to a shared
// topic, the orders over 500 to an alert topic and the transactions over 1500 to another. The alert topic gets exactly
// the orders PostgreSQL holds with a total over 500, and through the tcc each transaction's records,
// in every topic, arrive together in source order, with the chain running on four changes at once.
func TestKCOPChainEndToEnd(t *testing.T) {
	h := newHarness(t, "CREATE TABLE orders (id int PRIMARY KEY, customer text NOT NULL, total numeric(12,2) NOT NULL, email text)",
		"--set", "kcop_workers=4")
	cfg, err := os.ReadFile(h.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	key, err := rsa.GenerateKey(crand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "public.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	chain := fmt.Sprintf(`kcops:
  - type: json
    topic: "%[1]s.full.{table}"
    headers: {audit-txid: txid, audit-op: op, customer: column.customer}
  - type: avro
    registry_url: %[4]s
    topic: "%[1]s.avro.{table}"
  - type: json-audit
    topic: "%[1]s.audit.other"
    topics: {%[2]s.orders: "%[1]s.audit.{table}"}
  - type: encrypt
    columns: [email]
    public_key_file: %[3]s
  - type: json
    topic: "%[1]s.secret.{table}"
    tombstones: false
  - type: mask
    tables: [%[2]s.orders]
    columns: [email]
  - type: project
    columns: [total, email]
  - type: json
    topic: "%[1]s.shared.{table}"
    tombstones: false
  - type: txn-alert
    tables: [%[2]s.orders]
    sum: total
    over: 1500
    topic: "%[1]s.txn-alerts"
  - type: filter
    where: 'op in ["c", "u"] && after.total > 500'
  - type: json
    topic: "%[1]s.alerts"
    tombstones: false
`, h.id, h.schema, keyFile, testenv.RegistryURL(t))
	old := fmt.Sprintf("kcops:\n  - type: json\n    topic: \"%s.{table}\"\n", h.id)
	if !strings.Contains(string(cfg), old) {
		t.Fatalf("the harness's kcops section changed:\n%s", cfg)
	}
	if err := os.WriteFile(h.cfgPath, []byte(strings.Replace(string(cfg), old, chain, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	h.start()
	h.waitStreaming(time.Minute)

	rng := rand.New(rand.NewPCG(7, uint64(time.Now().UnixNano())))
	txns := 0
	bigTxns := map[string]string{} // xid -> the sum PostgreSQL gives for the transaction's after images, when over 1500
	ctx := context.Background()
	for id := 1; id <= 300; {
		tx, err := h.conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var touched []int
		for range 1 + rng.IntN(4) {
			if _, err := tx.Exec(ctx, fmt.Sprintf("INSERT INTO orders VALUES (%d, 'c%d', %d.%02d, 'c%d@example.com')", id, id%7, rng.IntN(1000), rng.IntN(100), id)); err != nil {
				t.Fatal(err)
			}
			touched = append(touched, id)
			id++
		}
		if id > 10 && rng.IntN(3) == 0 {
			if _, err := tx.Exec(ctx, fmt.Sprintf("DELETE FROM orders WHERE id = %d AND total <= 500", id-10)); err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, fmt.Sprintf("UPDATE orders SET customer = customer || '+' WHERE id = %d", id-9)); err != nil {
				t.Fatal(err)
			}
			touched = append(touched, id-9)
		}
		var xid, sum string
		if err := tx.QueryRow(ctx, `SELECT (pg_current_xact_id()::text::bigint % 4294967296)::text,
				coalesce(sum(total), 0)::text FROM orders WHERE id = ANY($1)`, touched).Scan(&xid, &sum); err != nil {
			t.Fatal(err)
		}
		var over bool
		if err := tx.QueryRow(ctx, "SELECT $1::numeric > 1500", sum).Scan(&over); err != nil {
			t.Fatal(err)
		}
		if over {
			bigTxns[xid] = sum
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		txns++
	}
	var want []string
	rows, err := h.conn.Query(context.Background(), "SELECT id::text FROM orders WHERE total > 500 ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
	}
	rows.Close()

	got := map[string]bool{}         // ids with an alert
	gotBig := map[string]string{}    // xid -> sum of the transaction alerts
	lastTopic := map[string]string{} // xid -> the topic of the transaction's last record
	audited, decrypted := 0, 0
	c := newTCC(t, h)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for done := 0; done < txns; {
		f := c.Poll(ctx)
		if f.Err != nil {
			t.Fatalf("after %d transactions: %v", done, f.Err)
		}
		for _, tx := range f.Txns {
			if tx.Snapshot {
				continue
			}
			if !tx.First || !tx.Last {
				t.Fatalf("transaction %s arrived in chunks", tx.ID)
			}
			done++
			// In each partition, the records are in the order of their changes.
			type at struct {
				index  int64
				rec    int
				offset int64
			}
			last := map[string]at{}
			for _, op := range tx.Ops {
				p := fmt.Sprint(op.Topic, "/", op.Partition)
				if l, ok := last[p]; ok && (op.Offset <= l.offset || op.Index < l.index || op.Index == l.index && op.Rec <= l.rec) {
					t.Errorf("transaction %s: in %s, op %d.%d at offset %d follows op %d.%d at offset %d", tx.ID, p, op.Index, op.Rec, op.Offset, l.index, l.rec, l.offset)
				}
				last[p] = at{op.Index, op.Rec, op.Offset}
			}
			// Each change: its full record(s), then its shared record, then an alert when it qualifies.
			inFull, inAvro := map[int64]bool{}, map[int64]bool{}
			for _, op := range tx.Ops {
				topic := strings.TrimPrefix(op.Topic, h.id+".")
				lastTopic[tx.ID] = topic
				switch {
				case strings.HasPrefix(topic, "full."):
					inFull[op.Index] = true
				case strings.HasPrefix(topic, "avro."):
					inAvro[op.Index] = true
					if op.Value != nil && (len(op.Value) < 5 || op.Value[0] != 0) {
						t.Errorf("transaction %s: an Avro record not in Confluent's wire format: % x", tx.ID, op.Value)
					}
					continue
				}
				if op.Value == nil {
					continue
				}
				if topic == "txn-alerts" {
					var alert struct {
						TxID string `json:"txId"`
						Sum  string `json:"sum"`
					}
					if err := json.Unmarshal(op.Value, &alert); err != nil || alert.TxID != tx.ID {
						t.Errorf("transaction %s carries the alert %s (%v)", tx.ID, op.Value, err)
					}
					gotBig[tx.ID] = alert.Sum
					continue
				}
				var env struct {
					After map[string]json.RawMessage `json:"after"`
					Op    string                     `json:"op"`
				}
				if err := json.Unmarshal(op.Value, &env); err != nil {
					t.Fatal(err)
				}
				switch {
				case topic == "alerts":
					var key map[string]json.RawMessage
					_ = json.Unmarshal(op.Key, &key)
					got[string(key["id"])] = true
					if env.After["email"] == nil || string(env.After["email"]) != `"****"` {
						t.Errorf("an alert carries email %s, want it masked", env.After["email"])
					}
				case strings.HasPrefix(topic, "shared."):
					if env.After != nil {
						var cols []string
						for k := range env.After {
							cols = append(cols, k)
						}
						slices.Sort(cols)
						if strings.Join(cols, ",") != "email,id,total" || string(env.After["email"]) != `"****"` {
							t.Errorf("a shared record carries %s", env.After)
						}
					}
				case strings.HasPrefix(topic, "full."):
					if env.After != nil && (env.After["customer"] == nil || string(env.After["email"]) == `"****"`) {
						t.Errorf("a full record is not whole: %s", env.After)
					}
					headers := map[string]string{}
					for _, hd := range op.Headers {
						headers[hd.Key] = string(hd.Value)
					}
					if headers["audit-txid"] != tx.ID || headers["audit-op"] != env.Op {
						t.Errorf("transaction %s: a %s record has headers %v", tx.ID, env.Op, headers)
					}
					// The test wrote customer c<id mod 7>, and updates append +.
					var k struct{ ID int }
					_ = json.Unmarshal(op.Key, &k)
					if want := fmt.Sprintf("c%d", k.ID%7); env.Op == "c" && headers["customer"] != want ||
						env.Op == "u" && !strings.HasPrefix(headers["customer"], want+"+") {
						t.Errorf("order %d (%s): header customer %q", k.ID, env.Op, headers["customer"])
					}
				case topic == "audit.orders":
					var audit struct {
						TxID string `json:"AUD_TXID"`
					}
					if err := json.Unmarshal(op.Value, &audit); err != nil || audit.TxID != tx.ID {
						t.Errorf("transaction %s carries the audit record %s (%v)", tx.ID, op.Value, err)
					}
					audited++
				case strings.HasPrefix(topic, "secret."):
					if env.After == nil {
						continue
					}
					var k struct{ ID int }
					_ = json.Unmarshal(op.Key, &k)
					var sealed string
					if err := json.Unmarshal(env.After["email"], &sealed); err != nil {
						t.Fatalf("order %d: the encrypted email %s: %v", k.ID, env.After["email"], err)
					}
					plain, err := kcop.Decrypt(key, sealed)
					if want := fmt.Sprintf("c%d@example.com", k.ID); err != nil || string(plain) != want {
						t.Errorf("order %d: the email decrypts to %q (%v), want %q", k.ID, plain, err, want)
					}
					decrypted++
				default:
					t.Errorf("a record in topic %s", op.Topic)
				}
			}
			if !maps.Equal(inFull, inAvro) {
				t.Errorf("transaction %s: changes %v in the JSON topic, %v in the Avro topic", tx.ID, inFull, inAvro)
			}
		}
	}
	for xid, sum := range bigTxns {
		if gotBig[xid] != sum {
			t.Errorf("transaction %s sums to %s in PostgreSQL; its alert says %q", xid, sum, gotBig[xid])
		}
		if lastTopic[xid] != "txn-alerts" {
			t.Errorf("transaction %s: its alert is not its last record (the last is in %s)", xid, lastTopic[xid])
		}
	}
	for xid, sum := range gotBig {
		if _, ok := bigTxns[xid]; !ok {
			t.Errorf("an alert for transaction %s (sum %s), which PostgreSQL sums to 1500 or less", xid, sum)
		}
	}
	if audited == 0 || decrypted == 0 {
		t.Errorf("%d audit records in the overriding topic, %d encrypted emails", audited, decrypted)
	}
	t.Logf("%d transactions, %d over 1500, %d audit records, %d emails decrypted", txns, len(bigTxns), audited, decrypted)
	var alerted []string
	for id := range got {
		alerted = append(alerted, id)
	}
	slices.Sort(alerted)
	slices.Sort(want)
	if strings.Join(alerted, ",") != strings.Join(want, ",") {
		t.Errorf("alerts for orders %v; PostgreSQL holds orders over 500: %v", alerted, want)
	}
}

// TestOutboxEndToEnd: rows an application inserts into its outbox table (and deletes in the same
// transaction) become events routed by aggregate type, keyed by aggregate id, with PostgreSQL's own
// text of the payload as the value; the outbox table itself is never published; and through the
// tcc each event arrives in the transaction that wrote it, after the order written before it.
func TestOutboxEndToEnd(t *testing.T) {
	h := newHarness(t, `CREATE TABLE orders (id int PRIMARY KEY, total numeric(12,2) NOT NULL);
		CREATE TABLE outbox (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregatetype text NOT NULL, aggregateid text NOT NULL, type text NOT NULL, payload jsonb)`)
	cfg, err := os.ReadFile(h.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	old := fmt.Sprintf("kcops:\n  - type: json\n    topic: \"%s.{table}\"\n", h.id)
	chain := fmt.Sprintf("kcops:\n  - type: outbox\n    table: %s.outbox\n    topic: \"%s.event.{aggregatetype}\"\n", h.schema, h.id) + old[len("kcops:\n"):]
	if err := os.WriteFile(h.cfgPath, []byte(strings.Replace(string(cfg), old, chain, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	h.start()
	h.waitStreaming(time.Minute)
	ctx := context.Background()
	type event struct{ xid, id, aggID, payload string }
	var events []event
	for i := 1; i <= 20; i++ {
		tx, err := h.conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO orders VALUES ($1, $2)", i, fmt.Sprintf("%d.%02d", i*7, i)); err != nil {
			t.Fatal(err)
		}
		var e event
		if err := tx.QueryRow(ctx, `INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
				SELECT 'Order', id::text, 'OrderCreated', jsonb_build_object('id', id, 'total', total, 'note', 'ü "quoted"') FROM orders WHERE id = $1
				RETURNING (pg_current_xact_id()::text::bigint % 4294967296)::text, id::text, aggregateid, payload::text`, i).Scan(&e.xid, &e.id, &e.aggID, &e.payload); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if _, err := tx.Exec(ctx, "DELETE FROM outbox WHERE id = $1", e.id); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		events = append(events, e)
	}
	// An update of the outbox table is not an event.
	h.exec("UPDATE outbox SET type = 'Changed'")

	var got []event
	// The 20 transactions, and the update's (with no records) or an initial snapshot's before them.
	for _, tx := range drain(t, newTCC(t, h), len(events)+1) {
		var topics []string
		for _, op := range tx.Ops {
			topics = append(topics, strings.TrimPrefix(op.Topic, h.id+"."))
			if op.Topic != h.id+".event.Order" {
				continue
			}
			e := event{xid: tx.ID, aggID: string(op.Key), payload: string(op.Value)}
			for _, hd := range op.Headers {
				if hd.Key == "id" {
					e.id = string(hd.Value)
				}
			}
			got = append(got, e)
		}
		if len(topics) > 0 && !slices.Equal(topics, []string{"orders", "event.Order"}) {
			t.Errorf("transaction %s wrote to %v, want [orders event.Order]", tx.ID, topics)
		}
	}
	if !slices.Equal(got, events) {
		t.Errorf("events read through the tcc:\n%v\nPostgreSQL wrote:\n%v", got, events)
	}
}

// TestKCOPPluginEndToEnd: cdcd loads examples/kcop-plugin, built as a Go plugin with cdcd's build
// flags, from its configuration, and the plugin's records reach a tcc consumer in their
// transactions; `cdcd validate` names a plugin that cannot load before any data moves.
func TestKCOPPluginEndToEnd(t *testing.T) {
	if os.Getenv("CDCD_TEST_CDCD_BIN") != "" {
		t.Skip("a plugin must be built with the flags of the cdcd that loads it; CDCD_TEST_CDCD_BIN names another binary")
	}
	so := filepath.Join(t.TempDir(), "kv.so")
	if out, err := exec.Command("go", "build", "-race", "-tags", "failpoints", "-buildmode=plugin", "-o", so, "../../examples/kcop-plugin").CombinedOutput(); err != nil {
		t.Fatalf("building the plugin: %v\n%s", err, out)
	}
	h := newHarness(t, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	cfg, err := os.ReadFile(h.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	old := fmt.Sprintf("kcops:\n  - type: json\n    topic: \"%s.{table}\"\n", h.id)
	bad := strings.Replace(string(cfg), old, "kcops:\n  - {type: kv, plugin: /nonexistent/kv.so, topic: x}\n", 1)
	if err := os.WriteFile(h.cfgPath, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cdcdBin, "validate", "-c", h.cfgPath).CombinedOutput(); err == nil || !strings.Contains(string(out), "plugin /nonexistent/kv.so") {
		t.Errorf("validate with a missing plugin: %v\n%s", err, out)
	}
	good := strings.Replace(string(cfg), old, fmt.Sprintf("kcops:\n  - {type: kv, plugin: %s, topic: %s.kv}\n", so, h.id), 1)
	if err := os.WriteFile(h.cfgPath, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	h.start()
	h.waitStreaming(time.Minute)
	h.exec("INSERT INTO t VALUES (1, 'a'), (2, NULL)")
	h.exec("UPDATE t SET v = 'b' WHERE id = 1")
	h.exec("DELETE FROM t WHERE id = 2")
	table := h.schema + ".t"
	want := [][]string{{"c " + table + " id=1 v=a", "c " + table + " id=2 v=NULL"}, {"u " + table + " id=1 v=b"}, {"d " + table + " id=2"}}
	var got [][]string
	for _, tx := range drain(t, newTCC(t, h), len(want)) {
		var lines []string
		for _, op := range tx.Ops {
			lines = append(lines, string(op.Value))
		}
		if len(lines) > 0 {
			got = append(got, lines)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("the plugin's lines through the tcc:\n%q\nwant\n%q", got, want)
	}
}

// TestJSONAndCSVReadByKcat: the json and csv-audit records of rows full of commas, quotes, line
// breaks and NULLs, read with kcat (librdkafka, read_committed) and parsed by Python's json and csv
// modules, hold what PostgreSQL holds.
func TestJSONAndCSVReadByKcat(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		if testenv.InCI() {
			t.Fatal("kcat is not installed; scripts/stack.sh installs it")
		}
		t.Skip("kcat is not installed; run scripts/stack.sh up kafka")
	}
	h := newHarness(t, "CREATE TABLE people (id int PRIMARY KEY, name text, note text)")
	cfg, err := os.ReadFile(h.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	old := fmt.Sprintf("kcops:\n  - type: json\n    topic: \"%s.{table}\"\n", h.id)
	chain := fmt.Sprintf("kcops:\n  - {type: json, topic: \"%[1]s.{table}.json\", tombstones: false}\n  - {type: csv-audit, topic: \"%[1]s.{table}.csv\"}\n", h.id)
	if err := os.WriteFile(h.cfgPath, []byte(strings.Replace(string(cfg), old, chain, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	h.start()
	h.waitStreaming(time.Minute)
	h.exec(`INSERT INTO people VALUES (1, 'Ann, "the" first', 'line1
line2'), (2, NULL, 'tab	here'), (3, 'ümlaut \N', '')`)
	h.exec(`UPDATE people SET name = 'Bob ""quoted""', note = NULL WHERE id = 2`)
	h.exec(`DELETE FROM people WHERE id = 3`)
	h.waitDurable(time.Minute)

	rows, err := h.conn.Query(context.Background(), "SELECT id::text, name, note FROM people ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	type person struct{ name, note *string }
	held := map[string]person{}
	for rows.Next() {
		var id string
		var p person
		if err := rows.Scan(&id, &p.name, &p.note); err != nil {
			t.Fatal(err)
		}
		held[id] = p
	}
	rows.Close()

	for _, suffix := range []string{"json", "csv"} {
		topic := h.id + ".people." + suffix
		kc := exec.Command(kcat, "-b", strings.Join(h.brokers, ","), "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-J",
			"-X", "isolation.level=read_committed")
		var kout, kerr strings.Builder
		kc.Stdout, kc.Stderr = &kout, &kerr
		if err := kc.Run(); err != nil {
			t.Fatalf("kcat on %s: %v\n%s", topic, err, kerr.String())
		}
		py := exec.Command("python3", "testdata/read_kcat.py")
		py.Stdin = strings.NewReader(kout.String())
		out, err := py.CombinedOutput()
		if err != nil {
			t.Fatalf("python on %s: %v\n%s", topic, err, out)
		}
		// The last after image per id; a delete leaves none.
		last := map[string]*person{}
		n := 0
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			var rec struct {
				JSON *struct {
					After map[string]json.RawMessage `json:"after"`
				} `json:"json"`
				CSV []string `json:"csv"`
				Key string   `json:"key"`
			}
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("%v: %s", err, line)
			}
			n++
			var k struct{ ID int }
			_ = json.Unmarshal([]byte(rec.Key), &k)
			id := fmt.Sprint(k.ID)
			if suffix == "json" {
				text := func(raw json.RawMessage) *string {
					var s *string
					if err := json.Unmarshal(raw, &s); err != nil {
						t.Errorf("%s: %v", raw, err)
					}
					return s
				}
				if rec.JSON.After == nil {
					last[id] = nil
				} else {
					last[id] = &person{text(rec.JSON.After["name"]), text(rec.JSON.After["note"])}
				}
				continue
			}
			// op, time, user, txid, 3 before fields, 3 after fields; \N is NULL.
			if len(rec.CSV) != 10 {
				t.Fatalf("a CSV record of %d fields: %q", len(rec.CSV), rec.CSV)
			}
			field := func(s string) *string {
				if s == `\N` {
					return nil
				}
				return &s
			}
			if rec.CSV[0] == "d" {
				last[id] = nil
			} else {
				last[id] = &person{field(rec.CSV[8]), field(rec.CSV[9])}
			}
		}
		if n != 5 {
			t.Errorf("%s: %d records, want 5 (3 inserts, an update, a delete)", topic, n)
		}
		str := func(p *string) string {
			if p == nil {
				return "NULL"
			}
			return fmt.Sprintf("%q", *p)
		}
		for id, p := range held {
			if got := last[id]; got == nil || str(got.name) != str(p.name) || str(got.note) != str(p.note) {
				t.Errorf("%s: person %s read as %v, PostgreSQL has name %s, note %s", topic, id, got, str(p.name), str(p.note))
			}
		}
		if got, ok := last["3"]; !ok || got != nil {
			t.Errorf("%s: person 3 was deleted, but the last record is %v", topic, got)
		}
	}
}
