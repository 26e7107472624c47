package main

import (
	"os"
	"testing"
	"time"
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
