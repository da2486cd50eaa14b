package wgnt

// Options are the optional settings of Create. nil and zero fields mean
// the documented defaults.
type Options struct {
	// GUID is the requested GUID of the adapter, in the registry form
	// "{E5B3C7B4-5B7C-4B36-9D0B-5F5AF1C0B7A1}" as tun.Options.GUID takes
	// it. A fixed GUID keeps Windows' network location (NLA) the same
	// from one run to the next; "" lets Windows pick a random one, and
	// every adapter then makes a new network location.
	GUID string
	// TunnelType is the adapter's tunnel type, the driver's name for the
	// kind of adapter (wireguard-windows uses "WireGuard"), up to 127
	// UTF-16 code units; "" means "WireGuard".
	TunnelType string
}
