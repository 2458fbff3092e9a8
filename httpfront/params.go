package httpfront

import (
	"strconv"

	"github.com/valyala/fasthttp"
)

// Query parameters are parsed strictly: a present but malformed number is
// a 400 naming the parameter, never silently replaced by a default.

// queryUint returns the parameter as a uint64, whether it was present, or
// an error with code invalid_<name>.
func queryUint(args *fasthttp.Args, name string, maxValue uint64) (uint64, bool, *apiError) {
	raw := args.Peek(name)
	if raw == nil {
		return 0, false, nil
	}
	v, err := strconv.ParseUint(string(raw), 10, 64)
	if err != nil || v > maxValue {
		return 0, true, errBadRequest("invalid_"+name, name+" must be an integer from 0 to "+strconv.FormatUint(maxValue, 10))
	}
	return v, true, nil
}

// queryInt is queryUint for parameters that may be written negative, so
// that the error can say "must be positive" rather than "not a number".
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

// queryBytes returns a copy of the (already URL-decoded) parameter.
func queryBytes(args *fasthttp.Args, name string) ([]byte, bool) {
	raw := args.Peek(name)
	if raw == nil {
		return nil, false
	}
	return append([]byte(nil), raw...), true
}
