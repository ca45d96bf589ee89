package fault_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	redigo "github.com/gomodule/redigo/redis"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/internal/redistest"
	"github.com/tetherpush/tether/redis"
)

// redigoChildEnv makes the test binary run the redigo side of
// TestIncidentReplayed (see redigoChild) instead of the tests; its value is
// "addr pool callers".
const redigoChildEnv = "TETHER_FAULT_REDIGO_CHILD"

// incidentWait is how long each side of the replay is given.
const incidentWait = 3 * time.Second

// TestIncidentReplayed replays the incident of SPEC section 2 side by
// side on one redis-server: 2 × P callers, each holding one store
// operation's connection (or results) while it starts a second one.
//
//   - redigo, configured as in the incident (redis.Pool{MaxActive: P,
//     Wait: true}, no context, the inner Get inside the outer one), in a
//     child process that is killed afterwards: its callers must hang.
//   - tether's Redis layer (redis.Store), in this process, with the same
//     callers doing the same nesting (Pending, then with its answer in
//     hand Sent and Ack), each call under a 1 s deadline: all must finish,
//     none past its deadline.
func TestIncidentReplayed(t *testing.T) {
	srv := redistest.Start(t)
	pool := callersN()
	callers := 2 * pool

	// redigo, in a child process.
	ctx, cancel := context.WithTimeout(context.Background(), incidentWait+10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %d", redigoChildEnv, srv.Addr, pool, callers))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("redigo child: %v\n%s", err, out)
	}
	var rg struct {
		Done, Stuck int
		After       time.Duration
		ActiveConns int
	}
	line := lastLine(string(out))
	if err := json.Unmarshal([]byte(line), &rg); err != nil {
		t.Fatalf("redigo child printed %q: %v", out, err)
	}

	// tether, in process.
	s, err := redis.Open(ctx, redis.Options{URL: srv.URL(), Prefix: "incident"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const deadline = time.Second
	lat := make([]time.Duration, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < callers; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat[c], errs[c] = nestedCycle(s, fmt.Sprintf("pos-%d", c), deadline)
		}()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(incidentWait):
		<-finished // let the test end on its timeout rather than leak
		t.Fatalf("tether callers not done within %v", incidentWait)
	}
	took := time.Since(start)
	failed, late := 0, 0
	for c := range callers {
		if errs[c] != nil {
			failed++
		}
		if errs[c] != nil && strings.Contains(errs[c].Error(), "past its") {
			late++
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p99 := lat[len(lat)*99/100]

	t.Logf("incident replay: pool of %d connections, %d callers, each with an inner call inside its outer one:", pool, callers)
	t.Logf("  redigo Pool{MaxActive: %d, Wait: true}: %d callers done, %d stuck after %v (%d connections open, all held by outer calls)", pool, rg.Done, rg.Stuck, rg.After, rg.ActiveConns)
	t.Logf("  tether redis.Store:                 %d callers done in %v, %d errors, p99 %v, max %v, %d past their deadlines", callers-failed, took.Round(time.Millisecond), failed, p99.Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond), late)
	if rg.Stuck == 0 {
		t.Errorf("redigo side: no caller stuck; the replay does not reproduce the incident")
	}
	if failed > 0 || late > 0 {
		t.Errorf("tether side: %d errors, %d callers past their deadlines; want none", failed, late)
	}
}

// nestedCycle is one tether caller: Publish to its device, Read, and
// with its log's entries in hand a commit of their sends then one of their
// acks, each under its own deadline.
// It returns the time taken; a call that returns more than 250 ms after
// its deadline is an error saying so.
func nestedCycle(s *redis.Store, device string, d time.Duration) (time.Duration, error) {
	start := time.Now()
	call := func(fn func(ctx context.Context) error) error {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		t0 := time.Now()
		err := fn(ctx)
		if late := time.Since(t0) - d; late > 250*time.Millisecond {
			return fmt.Errorf("call returned %v past its %v deadline (%v)", late, d, err)
		}
		return err
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	m := &tether.Message{ID: "01JT" + strings.ReplaceAll(device, "-", ""), Target: tether.DeviceTarget(device),
		Data: json.RawMessage(`{"n":1}`), PublishedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := call(func(ctx context.Context) error { _, err := s.Publish(ctx, []*tether.Message{m}); return err }); err != nil {
		return time.Since(start), err
	}
	var es [][]tether.Entry
	err := call(func(ctx context.Context) (err error) {
		es, err = s.Read(ctx, []tether.ReadRequest{{Source: tether.DeviceTarget(device), Limit: 10}})
		return err
	})
	if err != nil {
		return time.Since(start), err
	}
	var sent, acked []tether.Mark
	for _, e := range es[0] {
		sent = append(sent, tether.Mark{Source: tether.DeviceTarget(device), Seq: e.Seq, State: tether.StateInflight, Attempts: 1})
		acked = append(acked, tether.Mark{Source: tether.DeviceTarget(device), Seq: e.Seq, State: tether.StateAcked, Attempts: 1})
	}
	commit := func(marks []tether.Mark) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			_, err := s.Commit(ctx, []tether.Change{{Device: device, At: time.Now(), Marks: marks}})
			return err
		}
	}
	if err := call(commit(sent)); err != nil {
		return time.Since(start), err
	}
	err = call(commit(acked))
	return time.Since(start), err
}

// redigoChild runs the incident's code: callers goroutines, each taking a
// pooled connection, doing a little work on it and then, still holding
// it, taking a second one. After incidentWait it prints how many finished
// as JSON and exits; its stuck goroutines die with the process.
func redigoChild(arg string) int {
	f := strings.Fields(arg)
	if len(f) != 3 {
		fmt.Println("bad", redigoChildEnv, arg)
		return 2
	}
	pool, _ := strconv.Atoi(f[1])
	callers, _ := strconv.Atoi(f[2])
	p := &redigo.Pool{
		MaxActive: pool,
		MaxIdle:   pool,
		Wait:      true, // wait for a free connection, with no deadline
		Dial: func() (redigo.Conn, error) {
			return redigo.Dial("tcp", f[0], redigo.DialConnectTimeout(time.Second),
				redigo.DialReadTimeout(time.Second), redigo.DialWriteTimeout(time.Second))
		},
	}
	var done sync.WaitGroup
	var mu sync.Mutex
	finished := 0
	for c := 0; c < callers; c++ {
		done.Add(1)
		go func() {
			defer done.Done()
			outer := p.Get() // the registration refresh
			defer outer.Close()
			_, _ = outer.Do("SET", fmt.Sprintf("reg:%d", c), "1", "EX", "60")
			time.Sleep(50 * time.Millisecond) // work while holding it
			inner := p.Get()                  // the nested call: waits for a free connection
			_, _ = inner.Do("LRANGE", "shop:1:messages", "0", "-1")
			inner.Close()
			mu.Lock()
			finished++
			mu.Unlock()
		}()
	}
	time.Sleep(incidentWait)
	mu.Lock()
	n := finished
	mu.Unlock()
	b, _ := json.Marshal(map[string]any{"Done": n, "Stuck": callers - n, "After": incidentWait, "ActiveConns": p.ActiveCount()})
	fmt.Println(string(b))
	return 0
}

// lastLine returns the last non-empty line of s.
func lastLine(s string) string {
	sc := bufio.NewScanner(strings.NewReader(s))
	last := ""
	for sc.Scan() {
		if t := strings.TrimSpace(sc.Text()); t != "" {
			last = t
		}
	}
	return last
}
