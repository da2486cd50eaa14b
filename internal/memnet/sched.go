package memnet

import (
	"container/heap"
	"sync"
	"time"
)

// scheduler delivers delayed datagrams from one timer heap with one goroutine.
type scheduler struct {
	mu      sync.Mutex
	items   itemHeap // guarded by mu
	seq     uint64   // tie-breaker keeping equal times in send order; guarded by mu
	stopped bool     // guarded by mu

	wake chan struct{} // capacity 1: the earliest deadline may have changed
	quit chan struct{}
	done chan struct{}
}

type item struct {
	at  time.Time
	seq uint64
	to  *Bind
	p   packet
}

type itemHeap []item

func (h itemHeap) Len() int { return len(h) }
func (h itemHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h itemHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *itemHeap) Push(x any)   { *h = append(*h, x.(item)) }
func (h *itemHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = item{}
	*h = old[:len(old)-1]
	return it
}

func (s *scheduler) start() {
	s.wake = make(chan struct{}, 1)
	s.quit = make(chan struct{})
	s.done = make(chan struct{})
	go s.run()
}

// add schedules p for delivery to b at at. It reports false if the
// scheduler is stopped.
func (s *scheduler) add(at time.Time, b *Bind, p packet) bool {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return false
	}
	s.seq++
	heap.Push(&s.items, item{at: at, seq: s.seq, to: b, p: p})
	first := s.items[0].seq == s.seq
	s.mu.Unlock()
	if first {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// stop ends the goroutine and drops what is still scheduled.
func (s *scheduler) stop() {
	s.mu.Lock()
	s.stopped = true
	s.items = nil
	s.mu.Unlock()
	close(s.quit)
	<-s.done
}

func (s *scheduler) run() {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var due []item
	for {
		s.mu.Lock()
		now := time.Now()
		for len(s.items) > 0 && !s.items[0].at.After(now) {
			due = append(due, heap.Pop(&s.items).(item))
		}
		wait := time.Hour
		if len(s.items) > 0 {
			wait = s.items[0].at.Sub(now)
		}
		s.mu.Unlock()
		for i, it := range due {
			it.to.enqueue(it.p)
			due[i] = item{}
		}
		due = due[:0]
		timer.Reset(wait)
		select {
		case <-s.quit:
			return
		case <-s.wake:
		case <-timer.C:
		}
	}
}
