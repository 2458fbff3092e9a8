// Command keel is the Keel server binary: flags, environment, config and
// subcommands (serve, produce, consume, topics, bench, verify).
//
// Contract: it wires the packages together and owns process concerns
// (signals, exit codes, logging); nothing imports it.
package main
