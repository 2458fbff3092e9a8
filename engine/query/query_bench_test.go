package query

import (
	"fmt"
	"testing"
)

// benchMessages makes n JSON messages of about 100 bytes, and the same
// orders in Avro binary and Protobuf binary.
func benchMessages(b *testing.B, n int) (jsonMsgs, avroMsgs, protoMsgs []Message) {
	countries := []string{"DE", "FR", "US", "JP", "BR"}
	var orders, porders []map[string]any
	for i := 0; i < n; i++ {
		c := countries[i%len(countries)]
		jsonMsgs = append(jsonMsgs, Message{Offset: uint64(i), TimestampMs: int64(i), Value: []byte(fmt.Sprintf(
			`{"id":%d,"user":"user-%d","country":"%s","amount":%d.5,"status":"PAID","ok":true}`, i, i%1000, c, i%500))})
		orders = append(orders, order(int64(i), fmt.Sprintf("user-%d", i%1000), float64(i%500)+0.5, "PAID", nil))
		porders = append(porders, map[string]any{"id": int64(i), "user_id": fmt.Sprintf("user-%d", i%1000), "amount": float64(i%500) + 0.5, "meta": c})
	}
	return jsonMsgs, avroOrders(b, orders...), protoOrders(b, porders...)
}

// BenchmarkFilterGroupBy is filter + group_by per message on one core,
// for each decoding (ns/op is per message).
func BenchmarkFilterGroupBy(b *testing.B) {
	jsonMsgs, avroMsgs, protoMsgs := benchMessages(b, 10000)
	cases := []struct {
		name string
		body string
		msgs []Message
	}{
		{"json", `{"source":{"topic":"t"},"filter":[{"field":"amount","op":"gt","value":100}],
			"aggregate":{"group_by":["country"],"measures":[{"op":"count"},{"op":"sum","field":"amount"}]}}`, jsonMsgs},
		{"avro", `{"source":{"topic":"t","decode":{"type":"avro","schema_text":` + decodeJSON(orderAvsc) + `}},"filter":[{"field":"amount","op":"gt","value":100}],
			"aggregate":{"group_by":["status"],"measures":[{"op":"count"},{"op":"sum","field":"amount"}]}}`, avroMsgs},
		{"proto", `{"source":{"topic":"t","decode":{"type":"proto","schema_text":` + decodeJSON(orderProto) + `}},"filter":[{"field":"amount","op":"gt","value":100}],
			"aggregate":{"group_by":["status"],"measures":[{"op":"count"},{"op":"sum","field":"amount"}]}}`, protoMsgs},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var req QueryRequest
			if err := decodeBody([]byte(c.body), &req); err != nil {
				b.Fatal(err)
			}
			q, err := testEngine.compileQuery(&req)
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for done := 0; done < b.N; {
				n := min(b.N-done, len(c.msgs))
				if _, err := q.run(&sliceMessages{msgs: c.msgs, limit: n}, 1<<20); err != nil {
					b.Fatal(err)
				}
				done += n
			}
		})
	}
}
