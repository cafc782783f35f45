package routing

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzRouteValue: any bytes parse without panicking, and every encoded
// route decodes to itself, with (conn, gateway) found at the offset
// Unregister's script compares.
func FuzzRouteValue(f *testing.F) {
	f.Add("phone", "gw-1", uint64(1), uint64(3), int64(1_700_000_000_000), []byte(nil))
	f.Add("", "", uint64(0), uint64(0), int64(0), []byte{1, 0xff, 0x80})
	f.Add("d\x00\xff", strings.Repeat("g", 255), uint64(1<<64-1), uint64(1<<63), int64(-1), []byte("\x01\x00\x00\x00\x00\x00\x00\x00\x01\x05\x00\x00"))
	f.Fuzz(func(t *testing.T, device, gateway string, conn, caps uint64, exp int64, junk []byte) {
		var rt Route
		_, _ = parseRouteValue(string(junk), &rt)
		if len(gateway) > maxGatewayLen {
			gateway = gateway[:maxGatewayLen]
		}
		in := Route{User: "u", Device: device, Gateway: gateway, Conn: conn, Caps: caps}
		v := string(appendRouteValue(nil, &in, exp))
		out := Route{User: "u"}
		gotExp, err := parseRouteValue(v, &out)
		if err != nil || gotExp != exp || out != in {
			t.Fatalf("round trip: %+v exp %d -> %+v exp %d, %v", in, exp, out, gotExp, err)
		}
		ident := string(appendRouteIdent(nil, &in))
		if !strings.HasPrefix(v[routeIdentOff-1:], ident) {
			t.Fatalf("ident not at offset %d", routeIdentOff)
		}
	})
}

func TestRouteIdentOffsetArg(t *testing.T) {
	if routeIdentOffArg != strconv.Itoa(routeIdentOff) {
		t.Fatalf("routeIdentOffArg = %q, routeIdentOff = %d", routeIdentOffArg, routeIdentOff)
	}
}
