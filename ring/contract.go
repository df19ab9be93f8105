package ring

import "github.com/shmlane/shmlane/transport"

// The ring's endpoints honour the message contract.
var (
	_ transport.Sender   = (*Producer)(nil)
	_ transport.Receiver = (*Consumer)(nil)
	_ transport.Sender   = (*MPMCProducer)(nil)
	_ transport.Receiver = (*MPMCConsumer)(nil)
)
