package main

import (
	"math/bits"
	"time"
)

// histogram is a log-linear latency histogram with bounded memory: values
// below 128 ns are exact, above that each power-of-two octave is split into
// 64 buckets, so a reported percentile is within 1/64 (~1.6 %) of the true
// sample. Values are clamped at maxTracked. Not safe for concurrent use.
type histogram struct {
	counts [numBuckets]uint64
	n      uint64
	sum    float64 // ns, for the mean
	min    int64
	max    int64
}

const (
	linearBuckets = 128
	octaveBuckets = 64
	maxBits       = 40 // values are clamped below 2^40 ns (~18 min)
	numBuckets    = linearBuckets + (maxBits-7)*octaveBuckets
	maxTracked    = int64(1)<<maxBits - 1
)

func bucketOf(v int64) int {
	if v < linearBuckets {
		if v < 0 {
			return 0
		}
		return int(v)
	}
	if v > maxTracked {
		v = maxTracked
	}
	u := uint64(v)
	s := bits.Len64(u) - 7 // u>>s is in [64, 128)
	return linearBuckets + (s-1)*octaveBuckets + int(u>>s) - octaveBuckets
}

// bucketRange is the inclusive range of values that map to bucket i.
func bucketRange(i int) (lo, hi int64) {
	if i < linearBuckets {
		return int64(i), int64(i)
	}
	k := i - linearBuckets
	s := uint(k/octaveBuckets + 1)
	m := int64(k%octaveBuckets + octaveBuckets)
	return m << s, (m+1)<<s - 1
}

func (h *histogram) record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
	h.counts[bucketOf(v)]++
}

func (h *histogram) merge(o *histogram) {
	if o.n == 0 {
		return
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
	for i, c := range o.counts {
		h.counts[i] += c
	}
}

// quantile returns the q-quantile (0 < q <= 1) as the midpoint of the bucket
// holding the ceil(q*n)-th smallest sample, clamped to [min, max].
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q * float64(h.n))
	if float64(rank) < q*float64(h.n) {
		rank++
	}
	rank = max(1, min(rank, h.n))
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := bucketRange(i)
			v := lo + (hi-lo)/2
			return time.Duration(min(max(v, h.min), h.max))
		}
	}
	return time.Duration(h.max)
}

func (h *histogram) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}
