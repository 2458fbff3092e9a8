package httpfront

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Scope is what a token may do. Each scope includes the ones below it.
type Scope int

const (
	ScopeRead Scope = iota + 1
	ScopeWrite
	ScopeAdmin
)

func (s Scope) String() string {
	switch s {
	case ScopeRead:
		return "read"
	case ScopeWrite:
		return "write"
	case ScopeAdmin:
		return "admin"
	}
	return "none"
}

// Token is one configured bearer token.
type Token struct {
	Secret string
	Scope  Scope
	Limit  *RateLimit // nil: unlimited
}

// RateLimit is the older "token@rps:burst:daily" form: a token bucket of
// burst tokens refilled at rps per second, and at most daily requests per
// UTC day (0 = no daily cap).
type RateLimit struct {
	RPS, Burst float64
	Daily      int64
}

// ParseTokens parses the comma-separated token list of --tokens /
// KEEL_TOKENS / RF_BEARER_TOKENS: "token", "token@read|write|admin", or
// "token@rps:burst:daily" (admin scope, rate limited); a scope and a limit
// may both be given ("token@write@100:200:0").
func ParseTokens(spec string) ([]Token, error) {
	var out []Token
	for _, entry := range strings.Split(spec, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		parts := strings.Split(entry, "@")
		t := Token{Secret: parts[0], Scope: ScopeAdmin}
		if t.Secret == "" {
			return nil, fmt.Errorf("token entry %q: empty token", entry)
		}
		for _, p := range parts[1:] {
			switch {
			case strings.Contains(p, ":"):
				lim, err := parseRateLimit(p)
				if err != nil {
					return nil, fmt.Errorf("token entry %q: %w", entry, err)
				}
				t.Limit = lim // nil when every field means "no limit"
			case p == "read":
				t.Scope = ScopeRead
			case p == "write":
				t.Scope = ScopeWrite
			case p == "admin":
				t.Scope = ScopeAdmin
			default:
				return nil, fmt.Errorf("token entry %q: %q is neither a scope (read, write, admin) nor rps:burst:daily", entry, p)
			}
		}
		out = append(out, t)
	}
	return out, nil
}

// parseRateLimit reads "rps:burst:daily". Each field is a non-negative
// decimal integer (rps and burst may have a fraction); a field too large
// for a 64-bit integer means "no limit" on that dimension, as in the
// older server, whose launch scripts set
// dev@55555555555555:11111111111111111:111111111111111111111. A limit
// with no bound left on any dimension is no limit at all (nil).
func parseRateLimit(s string) (*RateLimit, error) {
	f := strings.Split(s, ":")
	if len(f) != 3 {
		return nil, fmt.Errorf("rate limit %q: want rps:burst:daily", s)
	}
	rps, rpsInf, err1 := parseLimitField(f[0])
	burst, burstInf, err2 := parseLimitField(f[1])
	daily, dailyInf, err3 := parseLimitField(f[2])
	if err1 != nil || err2 != nil || err3 != nil || !rpsInf && rps <= 0 || !burstInf && burst < 1 || daily != math.Trunc(daily) {
		return nil, fmt.Errorf("rate limit %q: want rps > 0, burst >= 1, daily >= 0 (a number too large for 64 bits means no limit)", s)
	}
	lim := &RateLimit{RPS: rps, Burst: burst, Daily: int64(daily)}
	if rpsInf || burstInf {
		lim.RPS, lim.Burst = 0, 0 // no rate limit; a daily cap may remain
	}
	if dailyInf {
		lim.Daily = 0
	}
	if lim.RPS == 0 && lim.Daily == 0 {
		return nil, nil
	}
	return lim, nil
}

// int64Limit is the largest value a limit field may have; past it, the
// field means "no limit".
const int64Limit = float64(math.MaxInt64)

// parseLimitField parses one field of a rate limit: a non-negative decimal
// number; huge reports one too large for int64 (any number of digits).
func parseLimitField(s string) (v float64, huge bool, err error) {
	if s == "" || strings.ContainsAny(s, "eEnN+-xX_") { // plain decimals only: no exponents, signs, Inf or NaN
		return 0, false, fmt.Errorf("%q is not a non-negative decimal number", s)
	}
	v, err = strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, false, err
	}
	if errors.Is(err, strconv.ErrRange) || v >= int64Limit {
		return 0, true, nil
	}
	return v, false, nil
}

// authenticator checks bearer tokens and their rate limits, and limits
// failed attempts per client address.
type authenticator struct {
	tokens   []Token
	buckets  []*bucket // per token, nil when unlimited
	failures *failureLimiter
}

func newAuthenticator(tokens []Token) *authenticator {
	a := &authenticator{tokens: tokens, buckets: make([]*bucket, len(tokens)), failures: newFailureLimiter()}
	for i, t := range tokens {
		if t.Limit != nil {
			a.buckets[i] = &bucket{limit: *t.Limit, tokens: t.Limit.Burst}
		}
	}
	return a
}

// check returns nil when header carries a known token with at least need.
// With charge, the request counts against the token's rate limit. A
// client address whose attempts failed too often gets 429 for every
// attempt, good token or not, until its allowance refills: guessing tokens
// is slowed to authFailureRate per second.
func (a *authenticator) check(header []byte, need Scope, ip uint64, now time.Time, charge bool) *apiError {
	if wait := a.failures.blocked(ip, now); wait > 0 {
		return &apiError{status: 429, code: "rate_limited", message: "too many failed authentications from this address",
			retryAfter: int((wait + time.Second - 1) / time.Second)}
	}
	e := a.checkToken(header, need, now, charge)
	if e != nil && e.status == 401 && len(header) > 0 {
		// Only a token that was tried counts: a request without one guesses
		// nothing, and counting it would let any client on a shared address
		// (a NAT, a proxy) lock the others out for free.
		a.failures.fail(ip, now)
	}
	return e
}

func (a *authenticator) checkToken(header []byte, need Scope, now time.Time, charge bool) *apiError {
	secret, ok := bearer(header)
	if !ok {
		return &apiError{status: 401, code: "unauthorized", message: "send Authorization: Bearer <token>"}
	}
	for i := range a.tokens {
		t := &a.tokens[i]
		if subtle.ConstantTimeCompare([]byte(t.Secret), secret) != 1 {
			continue
		}
		if t.Scope < need {
			return &apiError{status: 403, code: "forbidden", message: fmt.Sprintf("this token has %s scope; the route needs %s", t.Scope, need)}
		}
		if b := a.buckets[i]; b != nil && charge {
			if wait := b.take(now); wait > 0 {
				return &apiError{status: 429, code: "rate_limited", message: "this token's rate limit is used up",
					retryAfter: int((wait + time.Second - 1) / time.Second)}
			}
		}
		return nil
	}
	return &apiError{status: 401, code: "unauthorized", message: "unknown token"}
}

// bearer returns the token of an "Authorization: Bearer <token>" header,
// as a slice of the header (no allocation).
func bearer(h []byte) ([]byte, bool) {
	const prefix = "bearer "
	if len(h) <= len(prefix) || !bytes.EqualFold(h[:len(prefix)], []byte(prefix)) {
		return nil, false
	}
	return bytes.TrimSpace(h[len(prefix):]), true
}

// Failed authentication is limited per client address (IPv4, or 0 for
// others, which then share one allowance): a burst of authFailureBurst,
// refilled at authFailureRate per second. The table holds at most
// authFailureAddrsMax addresses; when full it is cleared (an attacker with
// that many addresses gains a fresh allowance, no more).
const (
	authFailureBurst    = 20
	authFailureRate     = 2.0
	authFailureAddrsMax = 10_000
)

type failureLimiter struct {
	mu    sync.Mutex
	addrs map[uint64]*bucket // by ipKey; each a token bucket of failed attempts (no daily cap)
	size  atomic.Int64       // len(addrs): no lock while nobody failed
}

// failureAllowance is each address's bucket of failed attempts.
var failureAllowance = RateLimit{RPS: authFailureRate, Burst: authFailureBurst}

func newFailureLimiter() *failureLimiter {
	return &failureLimiter{addrs: map[uint64]*bucket{}}
}

// blocked returns how long ip must wait before trying again, 0 if not.
func (f *failureLimiter) blocked(ip uint64, now time.Time) time.Duration {
	if f.size.Load() == 0 {
		return 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.addrs[ip]
	if !ok {
		return 0
	}
	b.refillLocked(now)
	if b.tokens >= 1 {
		if b.tokens >= b.limit.Burst {
			delete(f.addrs, ip) // fully refilled: forget the address
			f.size.Store(int64(len(f.addrs)))
		}
		return 0
	}
	return b.untilOneLocked()
}

// fail spends one failed attempt of ip's allowance.
func (f *failureLimiter) fail(ip uint64, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.addrs[ip]
	if !ok {
		if len(f.addrs) >= authFailureAddrsMax {
			clear(f.addrs)
		}
		b = &bucket{limit: failureAllowance, tokens: failureAllowance.Burst, last: now}
		f.addrs[ip] = b
		f.size.Store(int64(len(f.addrs)))
	}
	b.refillLocked(now)
	b.tokens = max(0, b.tokens-1)
}

// refillLocked adds what the rate earned since the last call, up to the
// burst.
func (b *bucket) refillLocked(now time.Time) {
	if !b.last.IsZero() {
		b.tokens = min(b.limit.Burst, b.tokens+now.Sub(b.last).Seconds()*b.limit.RPS)
	}
	b.last = now
}

// untilOneLocked is how long until the bucket holds one whole token.
func (b *bucket) untilOneLocked() time.Duration {
	return time.Duration((1 - b.tokens) / b.limit.RPS * float64(time.Second))
}

// bucket is a token bucket plus a daily counter.
type bucket struct {
	mu     sync.Mutex
	limit  RateLimit
	tokens float64
	last   time.Time
	day    int64
	used   int64
}

// reserve books one request at the bucket's pace: it returns 0 when one
// is available now, else how long the caller must wait for its turn
// (spending it already), or, when that is longer than waitMax, minus the
// wait and books nothing.
func (b *bucket) reserve(now time.Time, waitMax time.Duration) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked(now)
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	wait := b.untilOneLocked()
	if wait > waitMax {
		return -max(wait, 1)
	}
	b.tokens-- // negative: later callers queue behind this one
	return wait
}

// take spends one request and returns 0, or how long to wait.
func (b *bucket) take(now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked(now)
	if day := now.UTC().Unix() / 86400; day != b.day {
		b.day, b.used = day, 0
	}
	if b.limit.Daily > 0 && b.used >= b.limit.Daily {
		midnight := time.Unix((b.day+1)*86400, 0)
		return midnight.Sub(now)
	}
	if b.limit.RPS > 0 { // 0: a daily cap only
		if b.tokens < 1 {
			return b.untilOneLocked()
		}
		b.tokens--
	}
	b.used++
	return 0
}
