package cli

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// sub dispatches "keel NAME VERB ..." to verbs[VERB].
func (c *command) sub(name string, args []string, verbs map[string]func([]string) int, order []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintf(c.env.Stderr, "usage: keel %s %s ... (keel %s VERB --help for each)\n", name, strings.Join(order, "|"), name)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	fn, ok := verbs[args[0]]
	if !ok {
		fmt.Fprintf(c.env.Stderr, "keel %s: unknown %q; one of %s\n", name, args[0], strings.Join(order, ", "))
		return ExitUsage
	}
	return fn(args[1:])
}

// simple runs a verb that takes nargs positional arguments, sends one
// request and prints the answer: the raw JSON with --json, else what
// human does with it.
func (c *command) simple(fs *flag.FlagSet, args []string, nargs int, what string, req func(pos []string) (method, path string, body []byte, err error), human func(b []byte) error) int {
	if code, ok := c.parse(fs, args); !ok {
		return code
	}
	if len(c.pos) != nargs {
		return c.usageError(fs, "want %s", what)
	}
	method, path, body, err := req(c.pos)
	if err != nil {
		return c.usageError(fs, "%v", err)
	}
	b, err := c.getJSON(method, path, body, nil)
	if err != nil {
		return c.fail(err)
	}
	if c.json || human == nil {
		c.printRaw(b)
		return ExitOK
	}
	if err := human(b); err != nil {
		return c.fail(err)
	}
	return ExitOK
}

func jsonBody(v any) []byte { b, _ := json.Marshal(v); return b }

func runTopics(c *command, args []string) int {
	order := []string{"list", "create", "describe", "delete-before", "retention"}
	return c.sub("topics", args, map[string]func([]string) int{
		"list": func(args []string) int {
			fs := c.flags("topics list", "", "  keel topics list\n")
			return c.simple(fs, args, 0, "no arguments", func([]string) (string, string, []byte, error) { return "GET", "/broker/topics", nil, nil },
				func(b []byte) error {
					var a struct {
						Topics []struct {
							Name       string
							Partitions int
						}
					}
					json.Unmarshal(b, &a)
					var rows [][]string
					for _, t := range a.Topics {
						rows = append(rows, []string{t.Name, strconv.Itoa(t.Partitions)})
					}
					table(c.env.Stdout, []string{"TOPIC", "PARTITIONS"}, rows)
					return nil
				})
		},
		"create": func(args []string) int {
			fs := c.flags("topics create", "NAME [--partitions N] [--cleanup delete|compact]", "  keel topics create events --partitions 8\n  keel topics create users --cleanup compact\n")
			parts := fs.Int("partitions", 8, "partitions")
			cleanup := fs.String("cleanup", "", "delete (retention) or compact (keep the newest record per key)")
			return c.simple(fs, args, 1, "NAME", func(pos []string) (string, string, []byte, error) {
				req := map[string]any{"name": pos[0], "partitions": *parts}
				if *cleanup != "" {
					req["cleanup"] = *cleanup
				}
				return "POST", "/broker/topics", jsonBody(req), nil
			}, func(b []byte) error {
				var a struct {
					Topic      string
					Partitions int
					Created    bool
				}
				json.Unmarshal(b, &a)
				state := "created"
				if !a.Created {
					state = "exists already"
				}
				fmt.Fprintf(c.env.Stdout, "topic %s: %d partitions, %s\n", a.Topic, a.Partitions, state)
				return nil
			})
		},
		"describe": func(args []string) int {
			fs := c.flags("topics describe", "NAME", "  keel topics describe events\n")
			return c.simple(fs, args, 1, "NAME", func(pos []string) (string, string, []byte, error) {
				return "GET", "/broker/topics/" + pathEscape(pos[0]), nil, nil
			}, func(b []byte) error {
				var a struct {
					Topic         string
					PartitionInfo []struct {
						Partition      int   `json:"partition"`
						LogStartOffset int64 `json:"log_start_offset"`
						LogEndOffset   int64 `json:"log_end_offset"`
						Bytes          int64 `json:"bytes"`
						Segments       int   `json:"segments"`
						Retention      struct {
							TTLMs    int64  `json:"ttl_ms"`
							MaxBytes int64  `json:"max_bytes"`
							Cleanup  string `json:"cleanup"`
						} `json:"retention"`
					} `json:"partition_info"`
				}
				if err := json.Unmarshal(b, &a); err != nil {
					return err
				}
				var rows [][]string
				for _, p := range a.PartitionInfo {
					rows = append(rows, []string{strconv.Itoa(p.Partition), strconv.FormatInt(p.LogStartOffset, 10), strconv.FormatInt(p.LogEndOffset, 10),
						strconv.FormatInt(p.LogEndOffset-p.LogStartOffset, 10), strconv.FormatInt(p.Bytes, 10), strconv.Itoa(p.Segments),
						policy(p.Retention.TTLMs, time.Millisecond), policy(p.Retention.MaxBytes, 0), p.Retention.Cleanup})
				}
				table(c.env.Stdout, []string{"PARTITION", "START", "END", "MESSAGES", "BYTES", "SEGMENTS", "TTL", "MAX_BYTES", "CLEANUP"}, rows)
				return nil
			})
		},
		"delete-before": func(args []string) int {
			fs := c.flags("topics delete-before", "NAME --partition P --before OFFSET", "  keel topics delete-before events --partition 0 --before 100000\n")
			part := fs.Int("partition", -1, "partition (required)")
			before := fs.Int64("before", -1, "new log start offset (required): offsets below it are deleted")
			return c.simple(fs, args, 1, "NAME", func(pos []string) (string, string, []byte, error) {
				if *part < 0 || *before < 0 {
					return "", "", nil, fmt.Errorf("--partition and --before are required")
				}
				return "POST", "/broker/delete-before", jsonBody(map[string]any{"topic": pos[0], "partition": *part, "before_offset": *before}), nil
			}, func(b []byte) error {
				var a struct {
					DeletedCount int64 `json:"deleted_count"`
					FreedBytes   int64 `json:"freed_bytes"`
				}
				json.Unmarshal(b, &a)
				fmt.Fprintf(c.env.Stdout, "deleted %d messages, freed %d bytes\n", a.DeletedCount, a.FreedBytes)
				return nil
			})
		},
		"retention": func(args []string) int {
			fs := c.flags("topics retention", "NAME|'*' [--partition P] [--ttl D] [--max-bytes N]", "  keel topics retention events --ttl 168h --max-bytes 10000000000\n  keel topics retention events --ttl 0        # clear the TTL\n")
			part := fs.Int("partition", -1, "one partition (-1: all)")
			ttl := fs.Duration("ttl", -1, "delete records older than this (0: clear the policy)")
			maxBytes := fs.Int64("max-bytes", -1, "keep at most this many bytes per partition (0: clear)")
			return c.simple(fs, args, 1, "NAME or '*'", func(pos []string) (string, string, []byte, error) {
				req := map[string]any{"topic": pos[0]}
				if *part >= 0 {
					req["partition"] = *part
				}
				if *ttl >= 0 {
					req["ttl_ms"] = ttl.Milliseconds()
				}
				if *maxBytes >= 0 {
					req["max_bytes"] = *maxBytes
				}
				if len(req) == 1 || len(req) == 2 && *part >= 0 {
					return "", "", nil, fmt.Errorf("give --ttl or --max-bytes")
				}
				return "POST", "/broker/retention", jsonBody(req), nil
			}, func(b []byte) error { fmt.Fprintln(c.env.Stdout, "retention set"); return nil })
		},
	}, order)
}

// policy prints a retention bound (0: none).
func policy(v int64, unit time.Duration) string {
	if v <= 0 {
		return "-"
	}
	if unit > 0 {
		return (time.Duration(v) * unit).String()
	}
	return strconv.FormatInt(v, 10)
}

func runGroups(c *command, args []string) int {
	order := []string{"list", "describe"}
	return c.sub("groups", args, map[string]func([]string) int{
		"list": func(args []string) int {
			fs := c.flags("groups list", "", "  keel groups list\n")
			return c.simple(fs, args, 0, "no arguments", func([]string) (string, string, []byte, error) { return "GET", "/broker/groups", nil, nil },
				func(b []byte) error {
					var a struct {
						Groups []struct {
							Group      string
							Generation any
							Members    int
							Strategy   any
							Topics     []string
						}
					}
					json.Unmarshal(b, &a)
					var rows [][]string
					for _, g := range a.Groups {
						rows = append(rows, []string{g.Group, orDash(g.Generation), strconv.Itoa(g.Members), orDash(g.Strategy), strings.Join(g.Topics, ",")})
					}
					table(c.env.Stdout, []string{"GROUP", "GENERATION", "MEMBERS", "STRATEGY", "TOPICS"}, rows)
					return nil
				})
		},
		"describe": func(args []string) int {
			fs := c.flags("groups describe", "GROUP", "  keel groups describe billing\n")
			return c.simple(fs, args, 1, "GROUP", func(pos []string) (string, string, []byte, error) {
				return "GET", "/broker/groups/" + pathEscape(pos[0]), nil, nil
			}, func(b []byte) error {
				var a struct {
					Group      string
					Generation any
					Strategy   any
					Lag        int64
					Members    []struct {
						MemberID         string `json:"member_id"`
						SessionTimeoutMs int64  `json:"session_timeout_ms"`
						Assignments      []struct {
							Topic      string
							Partitions []int
						}
					}
					Partitions []struct {
						Topic           string
						Partition       int
						CommittedOffset any   `json:"committed_offset"`
						LogEndOffset    int64 `json:"log_end_offset"`
						Lag             int64
						MemberID        any `json:"member_id"`
					}
				}
				if err := json.Unmarshal(b, &a); err != nil {
					return err
				}
				fmt.Fprintf(c.env.Stdout, "group %s: generation %s, strategy %s, %d members, lag %d\n\n", a.Group, orDash(a.Generation), orDash(a.Strategy), len(a.Members), a.Lag)
				if len(a.Members) > 0 {
					var rows [][]string
					for _, m := range a.Members {
						var as []string
						for _, x := range m.Assignments {
							ps := make([]string, len(x.Partitions))
							for i, p := range x.Partitions {
								ps[i] = strconv.Itoa(p)
							}
							as = append(as, x.Topic+":"+strings.Join(ps, ","))
						}
						rows = append(rows, []string{m.MemberID, (time.Duration(m.SessionTimeoutMs) * time.Millisecond).String(), strings.Join(as, " ")})
					}
					table(c.env.Stdout, []string{"MEMBER", "SESSION", "ASSIGNED"}, rows)
					fmt.Fprintln(c.env.Stdout)
				}
				var rows [][]string
				for _, p := range a.Partitions {
					rows = append(rows, []string{p.Topic, strconv.Itoa(p.Partition), orDash(p.CommittedOffset), strconv.FormatInt(p.LogEndOffset, 10), strconv.FormatInt(p.Lag, 10), orDash(p.MemberID)})
				}
				table(c.env.Stdout, []string{"TOPIC", "PARTITION", "COMMITTED", "LOG_END", "LAG", "MEMBER"}, rows)
				return nil
			})
		},
	}, order)
}

func runKV(c *command, args []string) int {
	order := []string{"get", "put", "del", "list"}
	kvPath := func(ns, key string) string { return "/kv/" + pathEscape(ns) + "/" + pathEscape(key) }
	return c.sub("kv", args, map[string]func([]string) int{
		"get": func(args []string) int {
			fs := c.flags("kv get", "NAMESPACE KEY", "  keel kv get config feature-x\n")
			return c.simple(fs, args, 2, "NAMESPACE KEY", func(pos []string) (string, string, []byte, error) { return "GET", kvPath(pos[0], pos[1]), nil, nil },
				func(b []byte) error {
					var a struct{ Value string }
					json.Unmarshal(b, &a)
					v, err := base64.StdEncoding.DecodeString(a.Value)
					if err != nil {
						return err
					}
					c.env.Stdout.Write(v)
					fmt.Fprintln(c.env.Stdout)
					return nil
				})
		},
		"put": func(args []string) int {
			fs := c.flags("kv put", "NAMESPACE KEY [VALUE|-] [--cas N] [--ttl D]", "  keel kv put config feature-x on\n  keel kv put config feature-x off --cas 3\n  keel kv put sessions s1 - --ttl 30m < blob\n")
			cas := fs.Int64("cas", -1, "write only if the key's cas is this (0: only if absent)")
			ttl := fs.Duration("ttl", 0, "time to live (0: none)")
			if code, ok := c.parse(fs, args); !ok {
				return code
			}
			if len(c.pos) < 2 || len(c.pos) > 3 {
				return c.usageError(fs, "want NAMESPACE KEY [VALUE|-]")
			}
			var value []byte
			if len(c.pos) == 3 && c.pos[2] != "-" {
				value = []byte(c.pos[2])
			} else {
				var err error
				if value, err = io.ReadAll(c.env.Stdin); err != nil {
					return c.fail(err)
				}
			}
			q := url.Values{}
			if *cas >= 0 {
				q.Set("cas", strconv.FormatInt(*cas, 10))
			}
			if *ttl > 0 {
				q.Set("ttl_ms", strconv.FormatInt(ttl.Milliseconds(), 10))
			}
			b, err := c.getJSON("POST", kvPath(c.pos[0], c.pos[1])+"?"+q.Encode(), value, nil)
			if err != nil {
				return c.fail(err)
			}
			if c.json {
				c.printRaw(b)
			} else {
				var a struct{ CAS uint64 }
				json.Unmarshal(b, &a)
				fmt.Fprintf(c.env.Stdout, "cas %d\n", a.CAS)
			}
			return ExitOK
		},
		"del": func(args []string) int {
			fs := c.flags("kv del", "NAMESPACE KEY [--cas N]", "  keel kv del config feature-x\n")
			cas := fs.Int64("cas", -1, "delete only if the key's cas is this")
			return c.simple(fs, args, 2, "NAMESPACE KEY", func(pos []string) (string, string, []byte, error) {
				p := kvPath(pos[0], pos[1])
				if *cas >= 0 {
					p += "?cas=" + strconv.FormatInt(*cas, 10)
				}
				return "DELETE", p, nil, nil
			}, func([]byte) error { fmt.Fprintln(c.env.Stdout, "deleted"); return nil })
		},
		"list": func(args []string) int {
			fs := c.flags("kv list", "NAMESPACE [--prefix P] [--limit N]", "  keel kv list config --prefix feature-\n")
			prefix := fs.String("prefix", "", "keys starting with this")
			limit := fs.Int("limit", 1000, "keys per page")
			if code, ok := c.parse(fs, args); !ok {
				return code
			}
			if len(c.pos) != 1 {
				return c.usageError(fs, "want NAMESPACE")
			}
			var rows [][]string
			after := ""
			for {
				q := url.Values{"prefix": {*prefix}, "limit": {strconv.Itoa(*limit)}}
				if after != "" {
					q.Set("after", after)
				}
				var a struct {
					Keys []struct {
						Key   string
						CAS   uint64
						TTLMs int64 `json:"ttl_ms"`
					}
					More bool
				}
				b, err := c.getJSON("GET", "/kv/"+pathEscape(c.pos[0])+"?"+q.Encode(), nil, &a)
				if err != nil {
					return c.fail(err)
				}
				if c.json {
					c.printRaw(b)
				}
				for _, k := range a.Keys {
					rows = append(rows, []string{k.Key, strconv.FormatUint(k.CAS, 10), policy(k.TTLMs, time.Millisecond)})
				}
				if !a.More || len(a.Keys) == 0 {
					break
				}
				after = a.Keys[len(a.Keys)-1].Key
			}
			if !c.json {
				table(c.env.Stdout, []string{"KEY", "CAS", "TTL"}, rows)
			}
			return ExitOK
		},
	}, order)
}

func runCluster(c *command, args []string) int {
	order := []string{"status", "add", "promote", "remove"}
	change := func(verb, usage, examples string, withAddr bool) func([]string) int {
		return func(args []string) int {
			fs := c.flags("cluster "+verb, usage, examples)
			raftAddr := fs.String("raft-addr", "", "the new node's raft address, host:port (add)")
			httpAddr := fs.String("http-addr", "", "the new node's HTTP URL (add; default: raft port + 1)")
			priority := fs.Int("priority", 0, "leadership priority (add)")
			return c.simple(fs, args, 1, "NODE_ID", func(pos []string) (string, string, []byte, error) {
				req := map[string]any{"node_id": pos[0]}
				if withAddr {
					if *raftAddr == "" {
						return "", "", nil, fmt.Errorf("--raft-addr is required")
					}
					req["advertise_addr"], req["priority"] = *raftAddr, *priority
					if *httpAddr != "" {
						req["http_addr"] = *httpAddr
					}
				}
				return "POST", "/ha/membership/" + verb, jsonBody(req), nil
			}, func([]byte) error { fmt.Fprintf(c.env.Stdout, "%s %s: done\n", verb, c.pos[0]); return nil })
		}
	}
	return c.sub("cluster", args, map[string]func([]string) int{
		"status": func(args []string) int {
			fs := c.flags("cluster status", "", "  keel cluster status --url http://10.0.0.1:1109\n")
			return c.simple(fs, args, 0, "no arguments", func([]string) (string, string, []byte, error) { return "GET", "/ha/membership", nil, nil },
				func(b []byte) error {
					var a struct {
						Membership struct {
							Epoch       uint64
							JointActive bool `json:"joint_active"`
							Leader      string
							Nodes       []struct {
								NodeID        string `json:"node_id"`
								AdvertiseAddr string `json:"advertise_addr"`
								HTTPAddr      string `json:"http_addr"`
								Priority      int
								IsVoter       bool `json:"is_voter"`
								IsLearner     bool `json:"is_learner"`
							}
						}
					}
					if err := json.Unmarshal(b, &a); err != nil {
						return err
					}
					m := a.Membership
					fmt.Fprintf(c.env.Stdout, "leader %s, membership epoch %d, joint %v\n\n", orDash(nonEmpty(m.Leader)), m.Epoch, m.JointActive)
					var rows [][]string
					for _, n := range m.Nodes {
						role := "voter"
						if n.IsLearner {
							role = "learner"
						} else if !n.IsVoter {
							role = "-"
						}
						if n.NodeID == m.Leader {
							role += " (leader)"
						}
						rows = append(rows, []string{n.NodeID, role, n.AdvertiseAddr, n.HTTPAddr, strconv.Itoa(n.Priority)})
					}
					table(c.env.Stdout, []string{"NODE", "ROLE", "RAFT", "HTTP", "PRIORITY"}, rows)
					return nil
				})
		},
		"add":     change("add", "NODE_ID --raft-addr HOST:PORT [--http-addr URL] [--priority N]", "  keel cluster add node4 --raft-addr 10.0.0.4:7000\n", true),
		"promote": change("promote", "NODE_ID", "  keel cluster promote node4\n", false),
		"remove":  change("remove", "NODE_ID", "  keel cluster remove node2\n", false),
	}, order)
}

func nonEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}
