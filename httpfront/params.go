package httpfront

import (
	"strconv"

	"github.com/valyala/fasthttp"
)

// Query parameters are parsed strictly: a present but malformed number is
// a 400 naming the parameter, never silently replaced by a default. A
// parameter documented as clamped clamps for any size of number, however
// many digits it has: a value too large for 64 bits is simply large.

// numberKind classifies a decimal parameter without limiting its size.
type numberKind int

const (
	numberInvalid  numberKind = iota // empty, not decimal digits, a lone sign
	numberNegative                   // "-" followed by digits (any size)
	numberFits                       // non-negative, fits in int64
	numberHuge                       // non-negative, past int64
)

// classifyNumber reads raw as an optionally signed decimal integer of any
// length. For numberFits, v is its value.
func classifyNumber(raw []byte) (v int64, k numberKind) {
	digits := raw
	if len(digits) > 0 && (digits[0] == '-' || digits[0] == '+') {
		digits = digits[1:]
	}
	if len(digits) == 0 {
		return 0, numberInvalid
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, numberInvalid
		}
	}
	if raw[0] == '-' {
		for _, c := range digits {
			if c != '0' {
				return 0, numberNegative
			}
		}
		return 0, numberFits // "-0"
	}
	n, err := strconv.ParseInt(string(digits), 10, 64)
	if err != nil {
		return 0, numberHuge // only ErrRange is possible: the digits are valid
	}
	return n, numberFits
}

// queryClamped reads a parameter documented as clamped: absent → def;
// below minValue (negative, or 0 when minValue is 1) or not a number → a
// 400 invalid_<name> with hint; above maxValue (any size) → maxValue.
func queryClamped(args *fasthttp.Args, name string, def, minValue, maxValue int64, hint string) (int64, *apiError) {
	raw := args.Peek(name)
	if raw == nil {
		return def, nil
	}
	v, k := classifyNumber(raw)
	switch {
	case k == numberInvalid || k == numberNegative || k == numberFits && v < minValue:
		return 0, errBadRequest("invalid_"+name, name+" "+hint+" (larger values are clamped to "+strconv.FormatInt(maxValue, 10)+")")
	case k == numberHuge:
		return maxValue, nil
	}
	return min(v, maxValue), nil
}

// queryInt returns the parameter as an int64 and whether it was present;
// a value that is not a 64-bit integer is an error with code
// invalid_<name>. For parameters that are not clamped (a partition).
func queryInt(args *fasthttp.Args, name string) (int64, bool, *apiError) {
	raw := args.Peek(name)
	if raw == nil {
		return 0, false, nil
	}
	v, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return 0, true, errBadRequest("invalid_"+name, name+" must be an integer")
	}
	return v, true, nil
}
