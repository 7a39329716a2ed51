internal import Logging

extension Logger.Metadata {
    /// The metadata a handler logs: its own, overridden by the provider's (task-local context),
    /// overridden by the call's, which is the order swift-log's handlers use.
    static func merged(
        handler: Logger.Metadata,
        provider: Logger.MetadataProvider?,
        call: Logger.Metadata?
    ) -> Logger.Metadata {
        var merged = handler
        if let provided = provider?.get() {
            merged.merge(provided) { _, new in new }
        }
        if let call {
            merged.merge(call) { _, new in new }
        }
        return merged
    }
}
