package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, 100 on Linux everywhere).
const userHZ = 100

// cpuOf is the CPU time (user and system) a process on this machine has used, from /proc; false
// when it cannot be read (the process is gone or not ours to see).
func cpuOf(pid int) (time.Duration, bool) {
	return statCPU(fmt.Sprintf("/proc/%d/stat", pid))
}

// statCPU is the CPU time (user and system) in a /proc stat file, of a process or of a thread.
func statCPU(path string) (time.Duration, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	// The command name, in parentheses, may hold spaces; the fields after it are space-separated.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(utime+stime) * time.Second / userHZ, true
}

// walsenderCPU adds up the CPU of the walsenders that serve one replication slot: each
// replication connection has a process of its own, which exits with the connection, so it is read
// while the connection is open, and every process seen counts.
type walsenderCPU struct {
	slot string
	seen map[int32]time.Duration
}

func newWalsenderCPU(slot string) *walsenderCPU {
	return &walsenderCPU{slot: slot, seen: map[int32]time.Duration{}}
}

// sample reads the CPU of the slot's walsender, if one is active and on this machine.
func (w *walsenderCPU) sample(ctx context.Context, conn *pgx.Conn) {
	var pid *int32
	if err := conn.QueryRow(ctx, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", w.slot).Scan(&pid); err != nil || pid == nil {
		return
	}
	if d, ok := cpuOf(int(*pid)); ok {
		w.seen[*pid] = d
	}
}

// total is the CPU of every walsender seen; false when none could be read (a server elsewhere).
func (w *walsenderCPU) total() (time.Duration, bool) {
	var t time.Duration
	for _, d := range w.seen {
		t += d
	}
	return t, len(w.seen) > 0
}

// localBroker is the process id of the stack's single Kafka broker when brokers is that broker
// (scripts/stack.sh writes its pid file), or 0.
func localBroker(brokers string) int {
	dir, addr := os.Getenv("CDCD_STACK_DIR"), os.Getenv("CDCD_STACK_KAFKA_BROKERS")
	if dir == "" || addr == "" || brokers != addr {
		return 0
	}
	b, err := os.ReadFile(filepath.Join(dir, "kafka", "kafka.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	if _, ok := cpuOf(pid); !ok {
		return 0
	}
	return pid
}

// jitCPUOf is the CPU a JVM's JIT compiler threads (HotSpot's "C1 CompilerThre…" and "C2
// CompilerThre…") have used; 0 when pid is 0 or its threads cannot be read.
func jitCPUOf(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0
	}
	var total time.Duration
	for _, t := range tasks {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/comm", pid, t.Name()))
		if err != nil || !(strings.HasPrefix(string(comm), "C1 CompilerThre") || strings.HasPrefix(string(comm), "C2 CompilerThre")) {
			continue
		}
		if d, ok := statCPU(fmt.Sprintf("/proc/%d/task/%s/stat", pid, t.Name())); ok {
			total += d
		}
	}
	return total
}
