package routing

import (
	"context"
	"strings"
)

// Topics is a Router ability: channels that a subscriber joins and leaves
// as its interest changes, so that a publication reaches only the
// subscribers that hold its topic at the time, and costs next to nothing
// when none does.
//
// Gateways use it for presence: a gateway joins the topic of a user while
// one of its connections watches that user (docs/gateway.md, "Presence"),
// and each connect or disconnect is published to the user's topic. Before,
// every change went to every gateway (AllGateways): with G gateways and N
// connections setting up, G x N deliveries, 55 million for a million
// connections on 55 gateway processes.
//
// Publish to a topic with Publish or PublishMany and TopicChannel(topic) as
// the gateway. Delivery is at-most-once like every Router publication.
type Topics interface {
	// SubscribeTopics opens a subscription that holds no topic yet. Every
	// batch published to a topic it holds goes to h, on one goroutine, in
	// publish order per topic; h must not block and must not retain batch.
	SubscribeTopics(h func(batch []byte)) (TopicSubscription, error)
}

// TopicSubscription is one subscriber's set of topics.
type TopicSubscription interface {
	// Join adds topics; joining a topic held is a no-op. It returns once
	// the router delivers what is published to them from then on (or with
	// an error, after which the topics may or may not be held; Join again).
	Join(ctx context.Context, topics []string) error
	// Leave removes topics; leaving a topic not held is a no-op. Batches
	// published before it returns may still be delivered.
	Leave(ctx context.Context, topics []string) error
	// Close ends the subscription: h is not called once it returns.
	Close()
}

// topicPrefix starts every topic's channel name. Gateway ids never start
// with it (they are "gw-" + hex by default; gateway.New refuses ids that do).
const topicPrefix = "t:"

// TopicChannel is the Router channel (the Publish "gateway" argument) of
// topic.
func TopicChannel(topic string) string { return topicPrefix + topic }

// IsTopicChannel reports whether a Router channel name is a topic's.
func IsTopicChannel(channel string) bool { return strings.HasPrefix(channel, topicPrefix) }
