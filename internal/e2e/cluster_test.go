package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/cdcd-dev/cdcd/bookmark"
	"github.com/cdcd-dev/cdcd/internal/testenv"
	"github.com/cdcd-dev/cdcd/kafkasec"
	"github.com/cdcd-dev/cdcd/tcc"
)

// secureConfig points h's configuration at the cluster's SASL_SSL listeners with TLS (the stack's
// CA) and SCRAM-SHA-512, the password in a file; edit changes the security section first.
func secureConfig(t *testing.T, h *harness, c testenv.Cluster, edit func(tls, sasl map[string]string)) {
	t.Helper()
	pwFile := filepath.Join(t.TempDir(), "kafka-password")
	if err := os.WriteFile(pwFile, []byte(c.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tls := map[string]string{"enabled": "true", "ca_file": c.CAFile}
	sasl := map[string]string{"mechanism": "SCRAM-SHA-512", "user": c.User, "password_file": pwFile}
	if edit != nil {
		edit(tls, sasl)
	}
	block := func(name string, m map[string]string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "  %s:\n", name)
		for k, v := range m {
			fmt.Fprintf(&b, "    %s: %q\n", k, v)
		}
		return b.String()
	}
	cfg, err := os.ReadFile(h.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	s := string(cfg)
	if i := strings.Index(s, "\n  tls:\n"); i >= 0 { // an earlier call's sections
		j := strings.Index(s, "\nkcops:")
		s = s[:i+1] + s[j+1:]
	}
	s = strings.Replace(s, "  brokers: ["+strings.Join(h.brokers, ",")+"]\n", "  brokers: ["+strings.Join(c.SecureBrokers, ",")+"]\n", 1)
	s = strings.Replace(s, "\nkcops:", "\n"+block("tls", tls)+block("sasl", sasl)+"kcops:", 1)
	if err := os.WriteFile(h.cfgPath, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestClusterSecureEndToEnd: TLS everywhere. cdcd reads PostgreSQL over TLS (sslmode=verify-full)
// and writes to the three-node cluster over TLS with SCRAM-SHA-512; `cdcd tail`, a tcc consumer
// (SCRAM-SHA-256) and examples/pgapply (SCRAM-SHA-512, its password from the environment, applying
// to a target database over TLS) read the transactions back. A wrong password, an untrusted CA and a
// wrong server name each stop `cdcd validate` with an error naming the setting; the password appears
// in no log or output.
func TestClusterSecureEndToEnd(t *testing.T) {
	c := testenv.KafkaCluster(t)
	const ddl = "CREATE TABLE t (id int PRIMARY KEY, v text)"
	h := newHarnessOn(t, testenv.PostgresTLSDSN(t), ddl)
	target, targetDSN := newTarget(t, h, ddl)
	targetDSN = testenv.EditDSN(t, targetDSN, func(u *url.URL, q url.Values) {
		u.Host = strings.Replace(u.Host, "127.0.0.1", "localhost", 1)
		q.Set("sslmode", "verify-full")
		q.Set("sslrootcert", testenv.StackCAFile())
	})
	app := newApplier(t, h, targetDSN, "-tls", "-tls-ca-file", c.CAFile, "-sasl-mechanism", "SCRAM-SHA-512", "-sasl-user", c.User)
	app.args[1] = strings.Join(c.SecureBrokers, ",") // -brokers
	app.env = []string{"CDCD_KAFKA_SASL_PASSWORD=" + c.Password}
	var outputs []string
	defer func() {
		outputs = append(outputs, h.log(), app.log())
		for _, out := range outputs {
			if strings.Contains(out, c.Password) {
				t.Errorf("the password appears in:\n%s", out)
			}
		}
	}()
	validate := func() (string, error) {
		out, err := exec.Command(cdcdBin, "validate", "-c", h.cfgPath).CombinedOutput()
		outputs = append(outputs, string(out))
		return string(out), err
	}
	for _, tc := range []struct {
		name string
		edit func(tls, sasl map[string]string)
		want string
	}{
		{"wrong password", func(_, sasl map[string]string) {
			delete(sasl, "password_file")
			sasl["password"] = "not-" + c.Password[:3]
		}, `kafka.sasl: the brokers refused user "` + c.User + `"`},
		{"untrusted CA", func(tls, _ map[string]string) {
			tls["ca_file"] = testenv.NewCA(t, "a CA the cluster does not use").File
		}, "kafka.tls.ca_file"},
		{"wrong server name", func(tls, _ map[string]string) { tls["server_name"] = "kafka.example.com" }, "kafka.tls: the broker's certificate is not for"},
	} {
		secureConfig(t, h, c, tc.edit)
		if out, err := validate(); err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("%s: validate: %v\n%s", tc.name, err, out)
		}
	}
	secureConfig(t, h, c, nil)
	if out, err := validate(); err != nil || !strings.Contains(out, "TLS, SASL SCRAM-SHA-512 as "+c.User) {
		t.Fatalf("validate with good settings: %v\n%s", err, out)
	}

	h.brokers = c.Brokers // the harness's own readers and cleanup use the PLAINTEXT listeners
	h.start()
	h.waitStreaming(time.Minute)
	for i := range 20 {
		h.exec(fmt.Sprintf("INSERT INTO t SELECT g, 'v' || g FROM generate_series(%d, %d) g", i*5+1, i*5+5))
	}
	h.waitDurable(time.Minute)

	out, err := exec.Command(cdcdBin, "tail", "-c", h.cfgPath, "--json", "--max-txns", "20", "--idle-exit", "30s").CombinedOutput()
	outputs = append(outputs, string(out))
	if err != nil || strings.Count(string(out), `"id":`) < 20 {
		t.Errorf("cdcd tail over TLS and SCRAM: %v\n%s", err, out)
	}

	sec := kafkasec.Settings{TLS: kafkasec.TLS{Enabled: true, CAFile: c.CAFile}, SASL: kafkasec.SASL{Mechanism: kafkasec.ScramSHA256, User: c.User, Password: c.Password}}
	cons, err := tcc.NewConsumer(context.Background(), tcc.Brokers(c.SecureBrokers...), tcc.CommitTopic(h.id+".commits"), tcc.Security(sec))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	rows := 0
	for _, tx := range drain(t, cons, 20) {
		rows += len(tx.Ops)
	}
	if rows != 100 {
		t.Errorf("the tcc read %d rows over TLS and SCRAM-SHA-256, want 100", rows)
	}

	// A client we did not write: Confluent's Python client (librdkafka) over TLS and SCRAM-SHA-512
	// reads the rows as PostgreSQL renders them.
	py := exec.Command(confluentPython(t), "testdata/read_secure.py", strings.Join(c.SecureBrokers, ","), c.CAFile, c.User, h.id+".t", "100")
	py.Env = append(os.Environ(), "CDCD_KAFKA_SASL_PASSWORD="+c.Password)
	pyOut, err := py.CombinedOutput()
	outputs = append(outputs, string(pyOut))
	if err != nil {
		t.Fatalf("Confluent's client over TLS and SCRAM: %v\n%s", err, pyOut)
	}
	var read []string
	for _, line := range strings.Split(strings.TrimSpace(string(pyOut)), "\n") {
		var rec struct{ Value string }
		var value struct {
			After struct {
				ID json.Number
				V  string
			}
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		if err := json.Unmarshal([]byte(rec.Value), &value); err != nil {
			t.Fatalf("%v: %s", err, rec.Value)
		}
		read = append(read, value.After.ID.String()+" "+value.After.V)
	}
	var want []string
	if err := h.conn.QueryRow(context.Background(), "SELECT array_agg(id::text || ' ' || v ORDER BY id) FROM t").Scan(&want); err != nil {
		t.Fatal(err)
	}
	slices.Sort(read)
	slices.Sort(want)
	if !slices.Equal(read, want) {
		t.Errorf("Confluent's client read %d rows that differ from PostgreSQL's %d", len(read), len(want))
	}

	app.start()
	h.waitSame(target, "t")
	var encrypted bool
	if err := target.QueryRow(context.Background(), `SELECT bool_and(s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
		WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'`).Scan(&encrypted); err != nil || !encrypted {
		t.Errorf("pgapply's connection to the target is not encrypted (%v)", err)
	}
	app.signal(syscall.SIGTERM)
	checkApplied(t, target, h.schema, 20+h.snapshotTxns()) // + the snapshot's chunk (of no rows)
}

// onCluster moves h, before it starts, to the cluster's PLAINTEXT listeners.
func onCluster(t *testing.T, h *harness, c testenv.Cluster) {
	t.Helper()
	cfg, err := os.ReadFile(h.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(cfg), "  brokers: ["+strings.Join(h.brokers, ",")+"]\n", "  brokers: ["+strings.Join(c.Brokers, ",")+"]\n", 1)
	if err := os.WriteFile(h.cfgPath, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	h.brokers = c.Brokers
}

// leaderOf is the node that leads partition 0 of topic.
func leaderOf(t *testing.T, brokers []string, topic string) int32 {
	t.Helper()
	client, err := sarama.NewClient(brokers, sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for range 60 {
		if err := client.RefreshMetadata(topic); err == nil {
			if b, err := client.Leader(topic, 0); err == nil {
				return b.ID()
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("no leader for %s", topic)
	return 0
}

// TestClusterBrokerLossUnderLoad: while a bank workload runs over several tables, the leader of the
// commit topic's partition and the leaders of data partitions are killed with SIGKILL, six times in
// all, each brought back after; cdcd retries through every loss without exiting, and what the
// topics hold and what the tcc delivers equal the source's history exactly, in both delivery modes.
func TestClusterBrokerLossUnderLoad(t *testing.T) {
	c := testenv.KafkaCluster(t)
	for _, mode := range []string{"transactional", "parallel"} {
		t.Run(mode, func(t *testing.T) {
			h := newHarness(t, crashDDL, "--set", "kafka.delivery="+mode)
			onCluster(t, h, c)
			h.start()
			h.waitStreaming(time.Minute)
			// The initial snapshot (of empty tables) must be in Kafka before the workload starts. A
			// copy logged complete may not be yet: a broker new to the data topics can refuse the
			// first write, and cdcd then copies the tables again, this time with the workload's
			// rows, which it delivers both as copied reads and as their own inserts (no loss and no
			// overlap when replayed, but not the changes this test compares with, one for one).
			h.waitDurable(time.Minute)
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			w := newOwnRecorder(h)
			stop := make(chan struct{})
			done := bankWorkload(w, rand.New(rand.NewPCG(11, seed)), stop)
			time.Sleep(2 * time.Second) // the data topics exist once the workload wrote to them
			topics := []string{h.id + ".commits", h.id + ".accounts", h.id + ".commits", h.id + ".transfers", h.id + ".commits", h.id + ".accounts"}
			for i, topic := range topics {
				node := leaderOf(t, c.Brokers, topic)
				t.Logf("round %d: killing node %d, the leader of %s", i, node, topic)
				testenv.Stack(t, "crash-node", fmt.Sprint(node))
				time.Sleep(time.Duration(1000+rand.IntN(2000)) * time.Millisecond)
				h.alive(fmt.Sprintf("node %d was killed", node))
				testenv.Stack(t, "up", "kafka-cluster")
				h.alive(fmt.Sprintf("node %d came back", node))
			}
			h.endFaultWorkload(stop, done)
			if mode == "transactional" {
				// Any read_committed consumer sees every change once; in parallel delivery only the tcc
				// does (a lost leader may leave data records no commit record vouches for).
				h.verify(w.events, h.readAll())
			}
			h.checkTCCHistory(w)
		})
	}
}

// TestClusterTopicsReplicated: on the three-node cluster cdcd creates its commit and data topics
// with three replicas and min.insync.replicas 2 without being told, and `cdcd validate` warns about
// a commit topic, and a data topic the commit stream names, that can lose acknowledged records,
// naming the fix.
func TestClusterTopicsReplicated(t *testing.T) {
	c := testenv.KafkaCluster(t)
	h := newHarness(t, "CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE u (id int PRIMARY KEY)")
	onCluster(t, h, c)
	admin, err := sarama.NewClusterAdmin(c.Brokers, sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()

	// A commit topic made by hand with one replica and unclean leader election.
	unclean := "true"
	if err := admin.CreateTopic(h.id+".commits", &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1,
		ConfigEntries: map[string]*string{"unclean.leader.election.enable": &unclean}}, false); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command(cdcdBin, "validate", "-c", h.cfgPath).CombinedOutput()
	for _, want := range []string{"has one replica on a cluster of 3 brokers", "allows unclean leader election", "unclean.leader.election.enable=false"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("validate does not say %q:\n%s", want, out)
		}
	}
	if err := admin.DeleteTopic(h.id + ".commits"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		topics, _ := admin.ListTopics()
		if _, ok := topics[h.id+".commits"]; !ok {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}

	// A data topic made by hand with one replica; cdcd writes to it as it is.
	if err := admin.CreateTopic(h.id+".u", &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1}, false); err != nil {
		t.Fatal(err)
	}

	h.start()
	h.waitStreaming(time.Minute)
	h.exec("INSERT INTO t VALUES (1)")
	h.exec("INSERT INTO u VALUES (1)")
	h.waitDurable(time.Minute)
	for _, topic := range []string{h.id + ".commits", h.id + ".t"} {
		md, err := admin.DescribeTopics([]string{topic})
		if err != nil || len(md) != 1 || len(md[0].Partitions) == 0 {
			t.Fatalf("describing %s: %v %v", topic, md, err)
		}
		if n := len(md[0].Partitions[0].Replicas); n != 3 {
			t.Errorf("%s has %d replicas, want 3", topic, n)
		}
		entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic, ConfigNames: []string{"min.insync.replicas"}})
		if err != nil || len(entries) != 1 || entries[0].Value != "2" {
			t.Errorf("%s: min.insync.replicas %v (%v), want 2", topic, entries, err)
		}
	}
	// validate finds the data topics from the commit stream and names the one that can lose records.
	out, err = exec.Command(cdcdBin, "validate", "-c", h.cfgPath).CombinedOutput()
	if !strings.Contains(string(out), h.id+".u has one replica on a cluster of 3 brokers") || strings.Count(string(out), "warning") != 1 {
		t.Errorf("validate after cdcd wrote to its topics: %v\n%s", err, out)
	}
	if err := admin.DeleteTopic(h.id + ".u"); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(cdcdBin, "validate", "-c", h.cfgPath).CombinedOutput()
	if !strings.Contains(string(out), "no topic cdcd uses can lose acknowledged records") {
		t.Errorf("validate with the topic gone: %v\n%s", err, out)
	}
}

// healthz is what cdcd's /healthz answers.
func (h *harness) healthz() (int, string) {
	h.t.Helper()
	m := regexp.MustCompile(`serving /metrics and /healthz" addr=(\S+)`).FindStringSubmatch(h.log())
	if m == nil {
		h.t.Fatalf("cdcd did not log its metrics address")
	}
	resp, err := http.Get("http://" + m[1] + "/healthz")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestClusterBelowMinInsync: with two of the three nodes down, below min.insync.replicas, cdcd
// makes no progress and confirms nothing to the slot, stays up, and says why in its log and on
// /healthz; when the nodes return it continues by itself, and the tcc delivers every transaction.
func TestClusterBelowMinInsync(t *testing.T) {
	c := testenv.KafkaCluster(t)
	h := newHarness(t, crashDDL)
	onCluster(t, h, c)
	h.start()
	h.waitStreaming(time.Minute)
	w := newOwnRecorder(h)
	rng := rand.New(rand.NewPCG(12, uint64(time.Now().UnixNano())))
	b := &bank{nextAccount: 1, nextTransfer: 1}
	burst(b, w, rng, 2*time.Second)
	h.waitDurable(time.Minute)

	nodes := []int32{1, 2, 3}
	rand.Shuffle(len(nodes), func(i, j int) { nodes[i], nodes[j] = nodes[j], nodes[i] })
	for _, n := range nodes[:2] {
		testenv.Stack(t, "crash-node", fmt.Sprint(n))
	}
	// Everything the database writes from here on was written while Kafka could not take writes.
	outage := h.walLSN()
	burst(b, w, rng, 2*time.Second)
	deadline := time.Now().Add(time.Minute)
	code, body := 0, ""
	for time.Now().Before(deadline) {
		if code, body = h.healthz(); code == http.StatusServiceUnavailable && strings.Contains(body, "waiting since") {
			break
		}
		time.Sleep(time.Second)
	}
	t.Logf("/healthz with two nodes down: %d %s", code, body)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "waiting since") {
		t.Errorf("/healthz = %d %q with two of three brokers down", code, body)
	}
	// A group committed just before the second node went down may be confirmed to the slot a second
	// later; /healthz reports waiting only after ten seconds without an acknowledgement, so from here
	// on the slot must stand still.
	confirmed := h.slotConfirmed()
	if confirmed > outage {
		t.Errorf("the slot was confirmed to %s, past %s, where the database stood when Kafka stopped taking writes", confirmed, outage)
	}
	time.Sleep(5 * time.Second)
	h.alive("two brokers went down")
	if got := h.slotConfirmed(); got != confirmed {
		t.Errorf("the slot moved from %s to %s while Kafka could not take writes", confirmed, got)
	}
	if !strings.Contains(h.log(), "pipeline failed") {
		t.Errorf("cdcd's log does not say why it stopped:\n%s", h.log())
	}

	back := time.Now()
	testenv.Stack(t, "up", "kafka-cluster")
	burst(b, w, rng, time.Second)
	h.waitDurable(3 * time.Minute)
	if code, body := h.healthz(); code != http.StatusOK {
		t.Errorf("/healthz = %d %q after the brokers returned", code, body)
	}
	h.stop()
	// What the slot held during the outage was in the commit stream before the brokers returned.
	var durable bookmark.LSN
	for _, c := range h.commitRecords() {
		if c.Written.Before(back) {
			if lsn, err := bookmark.ParseLSN(c.Resume); err == nil && lsn > durable {
				durable = lsn
			}
		}
	}
	if confirmed > durable {
		t.Errorf("the slot held %s during the outage, past %s, the last position the commit stream held", confirmed, durable)
	}
	h.verify(w.events, h.readAll())
	h.checkTCCHistory(w)
}
