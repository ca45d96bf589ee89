package http_test

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/internal/nodetest"
)

// TestConcurrentPublishersLoseNothing publishes from several goroutines at
// once to a group and to single devices while the devices ack what they
// get, with a small window so that most deliveries wait in the store. Every
// device must receive every message addressed to it, and the first
// deliveries of each sequential publisher must arrive in publish order.
func TestConcurrentPublishersLoseNothing(t *testing.T) {
	n := mustOpenNode(t, func(h *hub.Config, _ *tetherhttp.Config) { h.MaxInflight = 8 })
	const devices, publishers, perPublisher = 4, 4, 60
	type got struct {
		ids   map[string]int // id → times received
		order map[string][]int
	}
	results := make([]got, devices)
	var wg sync.WaitGroup
	for i := 0; i < devices; i++ {
		d := n.Dial(t, nodetest.MustToken(t, fmt.Sprintf("pos-%d", i), "shop"))
		d.MustNext("welcome")
		results[i] = got{ids: map[string]int{}, order: map[string][]int{}}
		want := publishers*perPublisher + perPublisher // group messages + its own
		wg.Add(1)
		go func(i int, d *nodetest.Device) {
			defer wg.Done()
			for len(results[i].ids) < want {
				f, err := d.Next(10 * time.Second)
				if err != nil {
					t.Errorf("device %d after %d messages: %v", i, len(results[i].ids), err)
					return
				}
				var data struct {
					P   string `json:"p"`
					Seq int    `json:"seq"`
				}
				_ = json.Unmarshal(f.Data, &data)
				if f.Attempt == 1 {
					results[i].order[data.P] = append(results[i].order[data.P], data.Seq)
				}
				results[i].ids[f.ID]++
				d.Ack(f.ID)
			}
		}(i, d)
	}
	var pub sync.WaitGroup
	for p := 0; p < publishers; p++ {
		pub.Add(1)
		go func(p int) {
			defer pub.Done()
			for s := 0; s < perPublisher; s++ {
				n.Publish(t, "group:shop", map[string]any{"p": fmt.Sprint("g", p), "seq": s})
				if p < devices {
					n.Publish(t, fmt.Sprintf("device:pos-%d", p), map[string]any{"p": "d", "seq": s})
				}
			}
		}(p)
	}
	pub.Wait()
	wg.Wait()
	for i, r := range results {
		for p, seqs := range r.order {
			for k := 1; k < len(seqs); k++ {
				if seqs[k] < seqs[k-1] {
					t.Errorf("device %d publisher %s: first deliveries out of order: %v", i, p, seqs)
					break
				}
			}
		}
	}
}
