package eventtest_test

import (
	"testing"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/internal/eventtest"
	"github.com/tetherpush/tether/storetest"
)

func TestMemory(t *testing.T) {
	storetest.RunEvents(t, func(t *testing.T) tether.EventStore { return eventtest.NewMemory() })
}
