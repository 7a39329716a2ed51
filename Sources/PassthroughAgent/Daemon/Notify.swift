// Stands alone: the one way the daemon's parts (supervisor, step executor, service, guest requests) raise a
// journal notification and name a card's fields; it belongs to none of them.

import Logging
import PassthroughCore
import PassthroughSystemd

/// One notification: a log line at `level` that carries the kind's `MESSAGE_ID` and the
/// documented journal fields, so `journalctl -x` explains it and scripts can select it.
struct Notify {
    let logger: Logger

    func callAsFunction(
        _ kind: NotificationKind, _ message: String, level: Logger.Level = .notice, card: CardName? = nil,
        _ fields: Logger.Metadata = [:]
    ) {
        var metadata = fields
        if let card { metadata[LogMetadataKey.card] = "\(card)" }
        logger.log(level: level, "\(message)", metadata: kind.metadata(metadata))
    }
}

extension Logger.Metadata {
    static func card(_ card: CardConfig) -> Logger.Metadata {
        [LogMetadataKey.card: "\(card.name)", LogMetadataKey.guest: "\(card.guest)"]
    }
}
