package query

import (
	"bytes"

	"github.com/valyala/fastjson"
)

// constant is a filter's value, prepared once.
type constant struct {
	Value
	num   float64
	isNum bool   // a number, or a string that parses as one
	text  []byte // as stringified for text comparisons
}

func newConstant(v Value) constant {
	n, ok := v.Number()
	return constant{Value: v, num: n, isNum: ok, text: v.AppendText(nil)}
}

type op uint8

const (
	opEq op = iota + 1
	opNe
	opLt
	opLe
	opGt
	opGe
	opIn
	opContains
)

var ops = map[string]op{"eq": opEq, "ne": opNe, "lt": opLt, "le": opLe, "gt": opGt, "ge": opGe, "in": opIn, "contains": opContains}

// condition is one compiled filter term.
type condition struct {
	ref   *fieldRef
	op    op
	value constant
	set   []constant // in
}

// compileFilter checks and compiles a filter (the AND of its terms).
func compileFilter(terms []Condition, fs *fieldSet) ([]condition, *Error) {
	var out []condition
	values := 0
	for i, t := range terms {
		if err := checkField("filter", t.Field); err != nil {
			return nil, err
		}
		o, ok := ops[t.Op]
		if !ok {
			return nil, badRequest("invalid_filter", "filter[%d].op must be one of eq ne lt le gt ge in contains, not %q", i, t.Op)
		}
		c := condition{ref: fs.ref(t.Field), op: o}
		if len(t.Value) == 0 {
			return nil, badRequest("invalid_filter", "filter[%d] needs a value", i)
		}
		v, err := fastjson.ParseBytes(t.Value)
		if err != nil {
			return nil, badRequest("invalid_filter", "filter[%d].value: %v", i, err)
		}
		if o == opIn {
			items, err := v.Array()
			if err != nil {
				return nil, badRequest("invalid_filter", "filter[%d]: in takes an array of values", i)
			}
			for _, it := range items {
				k, ok := scalarConstant(it)
				if !ok {
					return nil, badRequest("invalid_filter", "filter[%d]: the values of in must be strings, numbers, booleans or null", i)
				}
				c.set = append(c.set, k)
			}
		} else {
			k, ok := scalarConstant(v)
			if !ok {
				return nil, badRequest("invalid_filter", "filter[%d].value must be a string, number, boolean or null", i)
			}
			c.value = k
		}
		if values += 1 + len(c.set); values > FilterValuesMax {
			return nil, badRequest("invalid_filter", "a filter may hold at most %d values (terms and in lists together)", FilterValuesMax)
		}
		out = append(out, c)
	}
	return out, nil
}

// scalarConstant converts a JSON scalar; objects and arrays are refused.
func scalarConstant(v *fastjson.Value) (constant, bool) {
	var d jsonDecoder
	switch v.Type() {
	case fastjson.TypeObject, fastjson.TypeArray:
		return constant{}, false
	}
	x := d.value(v)
	x.Text = bytes.Clone(x.Text) // the parser's memory is not kept
	return newConstant(x), true
}

// compare orders v against c: numerically when both are numbers (numeric
// strings count), else by their text.
func compare(v Value, c *constant) int {
	if c.isNum {
		if n, ok := v.Number(); ok {
			switch {
			case n < c.num:
				return -1
			case n > c.num:
				return 1
			}
			return 0
		}
	}
	return v.textCompare(c.text)
}

func equal(v Value, c *constant) bool {
	if c.isNum {
		if n, ok := v.Number(); ok {
			return n == c.num
		}
	}
	return v.textEqual(c.text)
}

// matches evaluates the term on a message's value of the field.
func (c *condition) matches(v Value, p *fastjson.Parser) bool {
	switch c.op {
	case opEq:
		return equal(v, &c.value)
	case opNe:
		return !equal(v, &c.value)
	case opLt:
		return compare(v, &c.value) < 0
	case opLe:
		return compare(v, &c.value) <= 0
	case opGt:
		return compare(v, &c.value) > 0
	case opGe:
		return compare(v, &c.value) >= 0
	case opIn:
		for i := range c.set {
			if equal(v, &c.set[i]) {
				return true
			}
		}
		return false
	}
	return c.contains(v, p)
}

// contains: an array holds an element equal to the value; anything else
// holds the value's text as a substring of its own.
func (c *condition) contains(v Value, p *fastjson.Parser) bool {
	if v.Kind == KindArray {
		arr, err := p.ParseBytes(v.Text)
		if err != nil {
			return false
		}
		items, _ := arr.Array()
		var d jsonDecoder
		for _, it := range items {
			if equal(d.value(it), &c.value) {
				return true
			}
		}
		return false
	}
	var buf [64]byte
	return bytes.Contains(v.AppendText(buf[:0]), c.value.text)
}
