// Package cache implements a small in-memory LRU cache with an HTTP front end.
package cache

import (
	"container/list"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
)

// DefaultCapacity is used when New is called with a non-positive capacity.
const DefaultCapacity = 128

var (
	errMissing = fmt.Errorf("cache: key not found")
	errClosed  = fmt.Errorf("cache: closed")
)

// Entry is one key/value pair stored in the list.
type Entry struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Store is the interface the HTTP handler depends on.
type Store interface {
	Get(key string) (string, error)
	Put(key, value string)
}

// LRU is a fixed-size cache that evicts the least recently used entry.
type LRU struct {
	mu       sync.Mutex
	capacity int
	order    *list.List
	items    map[string]*list.Element
}

// New returns an empty cache holding at most capacity entries.
func New(capacity int) *LRU {
	if capacity <= 0 {
		capacity = DefaultCapacity
	}
	return &LRU{capacity: capacity, order: list.New(), items: map[string]*list.Element{}}
}

// Get returns the value for key and marks it as recently used.
func (c *LRU) Get(key string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return "", errMissing
	}
	c.order.MoveToFront(el)
	return el.Value.(*Entry).Value, nil
}

// Put stores value under key, evicting the oldest entry when full.
func (c *LRU) Put(key, value string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		el.Value.(*Entry).Value = value
		c.order.MoveToFront(el)
		return
	}
	c.items[key] = c.order.PushFront(&Entry{Key: key, Value: value})
	if c.order.Len() > c.capacity {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(*Entry).Key)
	}
}

type handler struct{ store Store }

func (h handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Query().Get("key")
	switch r.Method {
	case http.MethodGet:
		value, err := h.store.Get(key)
		if err != nil {
			http.Error(w, `{"error": "not found"}`, http.StatusNotFound)
			return
		}
		_ = json.NewEncoder(w).Encode(Entry{Key: key, Value: value})
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

// Handler wraps a store; the returned func logs each request.
func Handler(store Store, logf func(string, ...any)) http.Handler {
	inner := handler{store: store}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		logf("cache %s %s {%q}", r.Method, r.URL.Path, r.URL.RawQuery)
		inner.ServeHTTP(w, r)
	})
}
