package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cdcd-dev/cdcd/internal/testenv"
)

// TestCPUOf compares what cpuOf reads from /proc for this process with what the kernel reports
// through getrusage: the same clock in two forms.
func TestCPUOf(t *testing.T) {
	deadline := time.Now().Add(300 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	before := selfCPU()
	got, ok := cpuOf(os.Getpid())
	after := selfCPU()
	if !ok {
		t.Fatal("cpuOf cannot read this process")
	}
	// /proc counts in hundredths of a second, and splits each thread's time into user and
	// system by ticks: allow it a tenth of a second below, and one tick above.
	if got < before-100*time.Millisecond || got > after+10*time.Millisecond {
		t.Errorf("cpuOf = %v, getrusage %v..%v", got, before, after)
	}
	if _, ok := cpuOf(1 << 30); ok {
		t.Error("cpuOf read a process that cannot exist")
	}
}

func TestLocalBrokerOnlyForTheStacksBroker(t *testing.T) {
	t.Setenv("CDCD_STACK_DIR", t.TempDir())
	t.Setenv("CDCD_STACK_KAFKA_BROKERS", "127.0.0.1:19092")
	if pid := localBroker("kafka.example:9092"); pid != 0 {
		t.Errorf("localBroker of another broker = %d, want 0", pid)
	}
	if pid := localBroker("127.0.0.1:19092"); pid != 0 {
		t.Errorf("localBroker without a pid file = %d, want 0", pid)
	}
}

// TestJITCPUOfTheStacksBroker reads the stack's Kafka broker, a JVM that compiled its hot paths
// while it started: its compiler threads have used some of its CPU and not all of it. A Go process
// has no such threads.
func TestJITCPUOfTheStacksBroker(t *testing.T) {
	brokers := strings.Join(testenv.KafkaBrokers(t), ",")
	t.Setenv("CDCD_STACK_DIR", testenv.StackDir())
	t.Setenv("CDCD_STACK_KAFKA_BROKERS", brokers)
	pid := localBroker(brokers)
	if pid == 0 {
		t.Fatalf("no pid of the stack's broker %s under %s", brokers, testenv.StackDir())
	}
	jit := jitCPUOf(pid)
	all, ok := cpuOf(pid)
	if !ok || jit <= 0 || jit >= all {
		t.Errorf("jitCPUOf(broker) = %v of its %v (read %v), want some and not all", jit, all, ok)
	}
	if d := jitCPUOf(os.Getpid()); d != 0 {
		t.Errorf("jitCPUOf(this Go process) = %v, want 0", d)
	}
}

// TestResidentOfThisProcess: observe reads this process's anonymous memory and peak RSS, and sees
// 64 MiB more of the former once this process has touched that much of a new allocation.
func TestResidentOfThisProcess(t *testing.T) {
	var before resident
	before.observe(os.Getpid())
	if before.anon <= 0 || before.peak < before.anon {
		t.Fatalf("observed %+v", before)
	}
	mem := make([]byte, 64<<20)
	for i := 0; i < len(mem); i += 4096 {
		mem[i] = 1
	}
	after := before
	after.observe(os.Getpid())
	if after.anon < before.anon+60<<20 || after.peak < after.anon {
		t.Errorf("after touching 64 MiB: %v, before %v", after, before)
	}
	var gone resident
	gone.observe(1 << 30)
	if gone != (resident{}) {
		t.Errorf("a process that does not exist: %+v", gone)
	}
	_ = mem[len(mem)-1]
}
