package bench

import (
	"fmt"
	"time"
)

// Suite runs scenarios against Keel and, when NoopTarget is set, the same
// load against a no-op server right after each, for the ratio.
type Suite struct {
	Target       string
	NoopTarget   string
	Token        string
	Connections  int
	Duration     time.Duration
	Rate         float64 // constant rate; 0 = closed loop
	RateFraction float64 // also run at this fraction of the measured closed-loop rate (0 = no)
	Progress     *Progress
}

// Run runs each scenario and returns the report rows.
func (s Suite) Run(scenarios []Scenario) ([]Row, error) {
	c := NewClient(s.Target, s.Token)
	var rows []Row
	for _, sc := range scenarios {
		if sc.Setup != nil {
			if err := sc.Setup(c); err != nil {
				return rows, err
			}
		}
		row, err := s.runOne(sc, s.Rate)
		if err != nil {
			return rows, err
		}
		rows = append(rows, row)
		if s.RateFraction > 0 && s.Rate == 0 {
			rated, err := s.runOne(sc, row.RequestsPerS*s.RateFraction)
			if err != nil {
				return rows, err
			}
			rows = append(rows, rated)
		}
	}
	return rows, nil
}

func (s Suite) runOne(sc Scenario, rate float64) (Row, error) {
	load := s.load(s.Target, sc.Request, rate, sc.Name)
	res, err := Run(load)
	if err != nil {
		return Row{}, err
	}
	row := rowOf(sc, load, res)
	// The ratio compares maximum throughput: at a fixed rate both servers
	// just keep up, so the no-op run is skipped.
	if s.NoopTarget != "" && rate == 0 {
		noopReq := func(w, i int) Request {
			r := sc.Request(w, i)
			r.Check = noopCheck
			return r
		}
		nl := s.load(s.NoopTarget, noopReq, rate, sc.Name+" (no-op)")
		nr, err := Run(nl)
		if err != nil {
			return row, err
		}
		row.NoopPerS = nr.RequestsPerSec()
		if row.NoopPerS > 0 {
			row.Ratio = row.RequestsPerS / row.NoopPerS
		}
	}
	if s.Progress != nil {
		s.Progress.Done(sc.Name, fmt.Sprintf("%.0f req/s, %.0f msg/s, p99 %.2f ms, errors %d",
			row.RequestsPerS, row.MessagesPerS, row.LatencyMs.P99, row.Errors))
	}
	return row, nil
}

func (s Suite) load(target string, next func(int, int) Request, rate float64, label string) Load {
	l := Load{Target: target, Token: s.Token, Connections: s.Connections, Duration: s.Duration, Rate: rate, Next: next}
	if s.Progress != nil {
		l.Progress = func(d time.Duration) { s.Progress.Update(label, d, s.Duration) }
	}
	return l
}
