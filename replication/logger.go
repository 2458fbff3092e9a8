package replication

import (
	"fmt"
	"log/slog"
	"os"
)

// raftLogger adapts etcd/raft's logger to slog. Debug is dropped; raft's
// Info lines (elections, term changes) are kept at Info.
type raftLogger struct{ l *slog.Logger }

func (r raftLogger) Debug(v ...interface{})                   {}
func (r raftLogger) Debugf(format string, v ...interface{})   {}
func (r raftLogger) Info(v ...interface{})                    { r.l.Info(fmt.Sprint(v...)) }
func (r raftLogger) Infof(format string, v ...interface{})    { r.l.Info(fmt.Sprintf(format, v...)) }
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
