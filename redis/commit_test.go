package redis

import (
	"strconv"
	"testing"
)

// TestCursorCacheBounded: the cache never holds more than cursorCacheN
// devices, keeps the newest value of each, and refresh adds none.
func TestCursorCacheBounded(t *testing.T) {
	var c cursorCache
	for i := range cursorCacheN + 100 {
		c.put(strconv.Itoa(i), "v")
	}
	if n := len(c.m); n != cursorCacheN {
		t.Errorf("%d devices cached, want %d", n, cursorCacheN)
	}
	c.put("last", "1")
	c.put("last", "2")
	if v, ok := c.get("last"); !ok || v != "2" {
		t.Errorf("get(last) = %q, %v; want 2", v, ok)
	}
	c.refresh("last", "3")
	c.refresh("absent", "x")
	if v, _ := c.get("last"); v != "3" {
		t.Errorf("after refresh, get(last) = %q, want 3", v)
	}
	if _, ok := c.get("absent"); ok {
		t.Error("refresh added a device")
	}
}
