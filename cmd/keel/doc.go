// Command keel is the Keel server binary.
//
//	keel [serve] [flags]   run a node (keel serve --help lists every flag;
//	                       keel followed directly by flags means serve)
//	keel bench [flags]     load-test a node beside a no-op server
//	keel version           print the version
//
// Contract: it wires the packages together and owns process concerns
// (flags, environment, the descriptor budget, signals and the bounded
// shutdown, exit codes, logging); nothing imports it.
package main
