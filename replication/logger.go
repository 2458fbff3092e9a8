package replication

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// raftLogger adapts etcd/raft's logger to slog. Debug is dropped; raft's
// Info lines (elections, term changes) are kept at Info, but for the ones
// that are routine with asynchronous storage writes (routineInfo).
type raftLogger struct{ l *slog.Logger }

// routineInfo marks raft Info lines that say nothing is wrong: with
// asynchronous writes, an append's acknowledgement can come back after a
// later append covered its entries ("missing from unstable log; ignoring",
// raft's unstable.stableTo); they go to Debug.
var routineInfo = []string{"missing from unstable log; ignoring"}

func (r raftLogger) info(msg string) {
	for _, s := range routineInfo {
		if strings.Contains(msg, s) {
			r.l.Debug(msg)
			return
		}
	}
	r.l.Info(msg)
}

func (r raftLogger) Debug(v ...interface{})                   {}
func (r raftLogger) Debugf(format string, v ...interface{})   {}
func (r raftLogger) Info(v ...interface{})                    { r.info(fmt.Sprint(v...)) }
func (r raftLogger) Infof(format string, v ...interface{})    { r.info(fmt.Sprintf(format, v...)) }
func (r raftLogger) Warning(v ...interface{})                 { r.l.Warn(fmt.Sprint(v...)) }
func (r raftLogger) Warningf(format string, v ...interface{}) { r.l.Warn(fmt.Sprintf(format, v...)) }
func (r raftLogger) Error(v ...interface{})                   { r.l.Error(fmt.Sprint(v...)) }
func (r raftLogger) Errorf(format string, v ...interface{})   { r.l.Error(fmt.Sprintf(format, v...)) }
func (r raftLogger) Fatal(v ...interface{}) {
	r.l.Error(fmt.Sprint(v...))
	os.Exit(1)
}
func (r raftLogger) Fatalf(format string, v ...interface{}) {
	r.l.Error(fmt.Sprintf(format, v...))
	os.Exit(1)
}
func (r raftLogger) Panic(v ...interface{})                 { panic(fmt.Sprint(v...)) }
func (r raftLogger) Panicf(format string, v ...interface{}) { panic(fmt.Sprintf(format, v...)) }
