// Package tunnel detects DNS tunnels and DNS exfiltration per (workload,
// registered domain) pair: lexical features of each name, behaviour of the
// pair over a sliding window, a score with the reasons that drove it, and the
// actions Off, Alert and Block (with a quarantine period). See
// docs/detection.md for the features, the defaults and how to tune them.
//
// The hot path (Blocked, Check, Observe) is O(1) per query — a fixed ring of window
// buckets and a fixed-size Bloom filter per pair — and allocates nothing in
// steady state; memory is bounded by an LRU of tracked pairs.
package tunnel

import (
	"hash/maphash"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

const (
	nBuckets = 12  // window buckets
	nShards  = 16  // lock shards
	bloomW   = 16  // uint64 words per Bloom generation (1,024 bits)
	bloomMax = 360 // insertions before a generation rotates
)

// Query record types counted as tunnel-friendly: they carry more data per
// answer than A/AAAA (DESIGN §6).
func oddType(qtype uint16) bool {
	switch qtype {
	case 16, 10, 5, 15: // TXT, NULL, CNAME, MX
		return true
	}
	return qtype >= 65280 && qtype <= 65534 // private use
}

type bucket struct {
	epoch                         int64
	queries, unique, odd, nx, ans uint32
	encoded                       float32
}

type pair struct {
	b            [nBuckets]bucket
	bloom        [2][bloomW]uint64
	bloomCount   uint32
	bloomEpoch   int64
	first        int64
	lastAlert    int64
	blockedUntil int64
	score        float64
}

type shard struct {
	mu   sync.Mutex
	lru  *simplelru.LRU[uint64, *pair]
	free []*pair
}

// Detector tracks (workload, registered domain) pairs. It is safe for
// concurrent use.
type Detector struct {
	c      Config
	width  int64 // bucket width, ns
	seed   maphash.Seed
	allow  map[string]struct{}
	ignore []string // ".cluster.local" and search domains, with a leading dot
	shards [nShards]shard
	psl    pslCache
	memo   memo // prepared names (prepare.go)
}

// Verdict is the outcome of one observed query.
type Verdict struct {
	// Suspected: the pair reached the threshold and an alert is due (at most
	// one per Config.Realert per pair).
	Suspected bool
	// Blocked: the action is Block and the pair is now quarantined.
	Blocked bool
	// Action in force for the workload.
	Action Action
	// Domain is the registered domain (empty when the name was ignored).
	Domain string
	// Score of the pair after this query.
	Score float64
	// Reasons and Features are set when Suspected: what drove the score.
	Reasons  []string
	Features map[string]float64
}

// Reason returns the reasons as one comma-separated string.
func (v Verdict) Reason() string { return strings.Join(v.Reasons, ",") }

// New returns a detector with cfg's defaults filled in.
func New(cfg Config) *Detector {
	c := cfg.withDefaults()
	d := &Detector{c: c, width: int64(c.Window) / nBuckets, seed: maphash.MakeSeed(), allow: map[string]struct{}{}}
	if d.width <= 0 {
		d.width = 1
	}
	if !c.NoDefaultAllow {
		for _, a := range DefaultAllow {
			d.allow[a] = struct{}{}
		}
	}
	for _, a := range c.Allow {
		if a = normalize(a); a != "" {
			d.allow[a] = struct{}{}
		}
	}
	for _, s := range append([]string{c.ClusterDomain}, c.SearchDomains...) {
		if s = normalize(s); s != "" {
			d.ignore = append(d.ignore, "."+s)
		}
	}
	d.psl.init()
	per := max(c.MaxPairs/nShards, 1)
	for i := range d.shards {
		sh := &d.shards[i]
		sh.lru, _ = simplelru.NewLRU[uint64, *pair](per, func(_ uint64, p *pair) {
			sh.free = append(sh.free, p)
		})
	}
	return d
}

// Config returns the effective configuration.
func (d *Detector) Config() Config { return d.c }

func normalize(s string) string {
	return strings.Trim(strings.ToLower(strings.TrimSpace(s)), ".")
}

// ActionFor returns the action in force for a workload: Config.ActionFor's
// when it sets one, else the default Config.Action.
func (d *Detector) ActionFor(workload string) Action {
	if d.c.ActionFor != nil {
		if a, ok := d.c.ActionFor(workload); ok {
			return a
		}
	}
	return d.c.Action
}

// RegisteredDomain returns the registered domain of qname (eTLD+1 by the
// Public Suffix List, ICANN and private sections), the subdomain part left of
// it as written, and the lowercase name; ok is false for names the detector
// ignores (cluster and search domains, single labels, public suffixes).
func (d *Detector) RegisteredDomain(qname string) (domain, sub, lower string, ok bool) {
	name := strings.TrimSuffix(qname, ".")
	if name == "" || strings.IndexByte(name, '.') < 0 {
		return "", "", "", false
	}
	lower = name
	for i := 0; i < len(name); i++ {
		if c := name[i]; c >= 'A' && c <= 'Z' {
			lower = strings.ToLower(name)
			break
		}
	}
	for _, s := range d.ignore {
		if strings.HasSuffix(lower, s) || lower == s[1:] {
			return "", "", "", false
		}
	}
	j := d.psl.registered(d.seed, lower)
	if j < -1 {
		return "", "", "", false
	}
	domain = lower[j+1:]
	if j > 0 {
		sub = name[:j]
	}
	return domain, sub, lower, true
}

// allowed reports whether lower or one of its parent domains is allow-listed.
func (d *Detector) allowed(lower string) bool {
	for s := lower; ; {
		if _, ok := d.allow[s]; ok {
			return true
		}
		i := strings.IndexByte(s, '.')
		if i < 0 {
			return false
		}
		s = s[i+1:]
	}
}

func (d *Detector) key(workload, domain string) uint64 {
	h := maphash.String(d.seed, workload)
	return h ^ (maphash.String(d.seed, domain)*0x9E3779B97F4A7C15 + 1)
}

func (d *Detector) shardOf(k uint64) *shard { return &d.shards[k>>60&(nShards-1)] }

// Blocked reports whether lookups of qname by workload are refused because the
// pair is quarantined, with the reason for the Extended DNS Error. Only
// workloads whose action is Block now are refused: a quarantine ends early
// when the workload's action changes to Alert or Off.
func (d *Detector) Blocked(workload, qname string) (bool, string) {
	if d.ActionFor(workload) != Block {
		return false, ""
	}
	domain, _, _, ok := d.RegisteredDomain(qname)
	if !ok {
		return false, ""
	}
	k := d.key(workload, domain)
	sh := d.shardOf(k)
	now := d.c.Now().UnixNano()
	sh.mu.Lock()
	p, ok := sh.lru.Peek(k)
	blocked := ok && p.blockedUntil > now
	sh.mu.Unlock()
	if blocked {
		return true, "egressd: DNS tunnel suspected, " + domain + " quarantined"
	}
	return false, ""
}

// Pair returns the registered domain of qname and the score of the
// (workload, domain) pair as of its last query (0 when it is not tracked).
func (d *Detector) Pair(workload, qname string) (domain string, score float64) {
	domain, _, _, ok := d.RegisteredDomain(qname)
	if !ok {
		return "", 0
	}
	k := d.key(workload, domain)
	sh := d.shardOf(k)
	sh.mu.Lock()
	if p, ok := sh.lru.Peek(k); ok {
		score = p.score
	}
	sh.mu.Unlock()
	return domain, score
}

// Observe records one answered query of workload (the client address when the
// workload is unknown): its name, type (dns.Type* values), response code and
// answer size in bytes. It returns the verdict; Suspected is set at most once
// per Config.Realert per pair.
func (d *Detector) Observe(workload, qname string, qtype uint16, rcode, answerSize int) Verdict {
	act := d.ActionFor(workload)
	if act == Off {
		return Verdict{}
	}
	q := d.prepare(qname)
	if !q.scored {
		return Verdict{Action: act}
	}
	domain, lx, nameHash := q.domain, &q.lx, q.nameHash
	k := d.key(workload, domain)
	now := d.c.Now().UnixNano()
	epoch := now / d.width

	sh := d.shardOf(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	p, ok := sh.lru.Get(k)
	if !ok {
		p = d.newPair(sh, k, now, epoch)
	}
	b := &p.b[epoch%nBuckets]
	if b.epoch != epoch {
		*b = bucket{epoch: epoch}
	}
	b.queries++
	if oddType(qtype) {
		b.odd++
	}
	if rcode == 3 {
		b.nx++
	}
	if answerSize > 0 {
		b.ans += uint32(min(answerSize, 65535))
	}
	if p.newName(nameHash, epoch) {
		b.unique++
		b.encoded += float32(lx.EncodedBytes)
	}

	s := p.sums(epoch)
	score, _ := d.score(&s)
	p.score = score
	v := Verdict{Action: act, Domain: domain, Score: score}
	if score < d.c.Threshold || (p.lastAlert != 0 && now-p.lastAlert < int64(d.c.Realert)) {
		return v
	}
	p.lastAlert = now
	v.Suspected = true
	if act == Block {
		p.blockedUntil = now + int64(d.c.Quarantine)
		v.Blocked = true
	}
	_, v.Reasons = d.score(&s)
	v.Features = d.features(&s, lx, now-p.first)
	return v
}

// Check is the pre-forward half of detection: it scores the pair as if qname
// (of type qtype) were added to it, without recording the query (Observe
// does, after the answer). When that score reaches the threshold, under Block
// it quarantines the pair and returns a Blocked verdict, so that the query
// that would cross the threshold is itself refused (its data never leaves);
// under Alert it returns a Suspected verdict for the query that crosses it,
// before the query is forwarded, so that a client pipelining many queries is
// reported as early as it would be blocked. Queries a client sends
// concurrently are all checked on arrival, before any answer comes back.
// Suspected is set unless the pair was alerted within Config.Realert. A pair
// already quarantined is Blocked too (not Suspected), so Check alone can stand
// for Blocked on the slow path. Under Off it returns the zero Verdict.
func (d *Detector) Check(workload, qname string, qtype uint16) Verdict {
	action := d.ActionFor(workload)
	if action == Off {
		return Verdict{}
	}
	q := d.prepare(qname)
	if !q.scored {
		return Verdict{}
	}
	domain, lx, nameHash := q.domain, &q.lx, q.nameHash
	k := d.key(workload, domain)
	now := d.c.Now().UnixNano()
	epoch := now / d.width

	sh := d.shardOf(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	p, tracked := sh.lru.Peek(k)
	var s sums
	if tracked {
		if p.blockedUntil > now && action == Block { // already quarantined (what Blocked says)
			return Verdict{Action: Block, Domain: domain, Score: p.score, Blocked: true}
		}
		if action == Alert && p.lastAlert != 0 && now-p.lastAlert < int64(d.c.Realert) {
			return Verdict{} // alerted recently: Observe keeps the score
		}
		s = p.sums(epoch)
	}
	s.queries++
	if oddType(qtype) {
		s.odd++
	}
	if !tracked || !p.seen(nameHash) {
		s.unique++
		s.encoded += lx.EncodedBytes
	}
	score, _ := d.score(&s)
	if score < d.c.Threshold {
		return Verdict{}
	}
	if !tracked {
		p = d.newPair(sh, k, now, epoch)
	}
	v := Verdict{Action: action, Domain: domain, Score: score}
	p.score = score
	if action == Block {
		v.Blocked = true
		p.blockedUntil = now + int64(d.c.Quarantine)
	}
	if p.lastAlert == 0 || now-p.lastAlert >= int64(d.c.Realert) {
		p.lastAlert = now
		v.Suspected = true
		_, v.Reasons = d.score(&s)
		v.Features = d.features(&s, lx, now-p.first)
	}
	return v
}

// newPair starts tracking a pair (the shard is locked).
func (d *Detector) newPair(sh *shard, k uint64, now, epoch int64) *pair {
	var p *pair
	if n := len(sh.free); n > 0 {
		p = sh.free[n-1]
		sh.free = sh.free[:n-1]
		*p = pair{}
	} else {
		p = new(pair)
	}
	p.first = now
	p.bloomEpoch = epoch
	sh.lru.Add(k, p)
	return p
}

// seen reports whether the name is in one of the pair's Bloom generations.
func (p *pair) seen(h uint64) bool {
	i1, i2 := h%(bloomW*64), (h>>32)%(bloomW*64)
	for g := range p.bloom {
		if p.bloom[g][i1/64]&(1<<(i1%64)) != 0 && p.bloom[g][i2/64]&(1<<(i2%64)) != 0 {
			return true
		}
	}
	return false
}

// newName reports whether the name was not seen by the pair recently (two
// Bloom generations, each covering up to half a window or bloomMax names).
func (p *pair) newName(h uint64, epoch int64) bool {
	if p.bloomCount >= bloomMax || epoch-p.bloomEpoch >= nBuckets/2 {
		p.bloom[1] = p.bloom[0]
		p.bloom[0] = [bloomW]uint64{}
		p.bloomCount = 0
		p.bloomEpoch = epoch
	}
	i1, i2 := h%(bloomW*64), (h>>32)%(bloomW*64)
	in := func(g int) bool {
		return p.bloom[g][i1/64]&(1<<(i1%64)) != 0 && p.bloom[g][i2/64]&(1<<(i2%64)) != 0
	}
	if in(0) || in(1) {
		return false
	}
	p.bloom[0][i1/64] |= 1 << (i1 % 64)
	p.bloom[0][i2/64] |= 1 << (i2 % 64)
	p.bloomCount++
	return true
}

type sums struct {
	queries, unique, odd, nx, ans float64
	encoded                       float64
}

func (p *pair) sums(epoch int64) sums {
	var s sums
	for i := range p.b {
		b := &p.b[i]
		if b.epoch > epoch-nBuckets && b.queries > 0 {
			s.queries += float64(b.queries)
			s.unique += float64(b.unique)
			s.odd += float64(b.odd)
			s.nx += float64(b.nx)
			s.ans += float64(b.ans)
			s.encoded += float64(b.encoded)
		}
	}
	return s
}

// score combines the window's sums: estimated encoded bytes and new names,
// each against its budget, multiplied by the signs that make a tunnel more
// likely (tunnel-friendly record types, NXDOMAIN answers, long encoded names,
// large answers). The reasons are built only when asked for (on alerts).
func (d *Detector) score(s *sums) (float64, []string) {
	base := s.encoded/d.c.EncodedBytes + s.unique/float64(d.c.UniqueNames)
	if base == 0 {
		return 0, nil
	}
	mult := 1.0
	var reasons []string
	want := false
	if s.queries >= 3 && s.odd/s.queries >= 0.5 {
		mult *= 1.5
		want = true
	}
	nx := s.queries >= 5 && s.nx/s.queries >= 0.5
	if nx {
		mult *= 1.25
	}
	long := s.unique >= 3 && s.encoded/s.unique >= 24
	if long {
		mult *= 1.5
	}
	large := s.queries >= 3 && s.ans/s.queries >= 180 && s.odd/s.queries >= 0.5
	if large {
		mult *= 1.2
	}
	score := base * mult
	if score < d.c.Threshold {
		return score, nil
	}
	if s.encoded/d.c.EncodedBytes >= s.unique/float64(d.c.UniqueNames) {
		reasons = append(reasons, "encoded-bytes")
	} else {
		reasons = append(reasons, "unique-subdomains")
	}
	if long {
		reasons = append(reasons, "long-encoded-names")
	}
	if want {
		reasons = append(reasons, "tunnel-record-types")
	}
	if nx {
		reasons = append(reasons, "nxdomain-ratio")
	}
	if large {
		reasons = append(reasons, "large-answers")
	}
	return score, reasons
}

func (d *Detector) features(s *sums, lx *Lexical, age int64) map[string]float64 {
	minutes := math.Max(1, math.Min(float64(age), float64(d.c.Window))/float64(time.Minute))
	q := math.Max(s.queries, 1)
	return map[string]float64{
		"encoded_bytes":         round(s.encoded),
		"encoded_bytes_per_min": round(s.encoded / minutes),
		"unique_subdomains":     s.unique,
		"queries":               s.queries,
		"queries_per_min":       round(s.queries / minutes),
		"tunnel_type_ratio":     round(s.odd / q),
		"nxdomain_ratio":        round(s.nx / q),
		"avg_answer_bytes":      round(s.ans / q),
		"name_length":           float64(lx.Len),
		"max_label_length":      float64(lx.MaxLabel),
		"labels":                float64(lx.Labels),
		"entropy":               round(lx.Entropy),
		"digit_ratio":           round(lx.DigitRatio),
		"max_consonant_run":     float64(lx.MaxConsonantRun),
		"charset":               float64(lx.Charset),
	}
}

func round(f float64) float64 { return math.Round(f*100) / 100 }

// Len returns the number of tracked pairs.
func (d *Detector) Len() int {
	n := 0
	for i := range d.shards {
		sh := &d.shards[i]
		sh.mu.Lock()
		n += sh.lru.Len()
		sh.mu.Unlock()
	}
	return n
}
