// Stands alone: the one way the daemon's parts (supervisor, step runner, service, guest requests) raise a
// journal notification and name a card's fields; it belongs to none of them. (Talking to the service manager,
// sd_notify, is `SystemdNotifier`'s.)

import Logging
import PassthroughCore
import PassthroughSystemd

extension Logger {
    /// Announces one notification: a log line at `level` that carries the kind's `MESSAGE_ID` and the
    /// documented journal fields, so `journalctl -x` explains it and scripts can select it.
    func announce(
        _ kind: NotificationKind, _ message: String, level: Logger.Level = .notice, card: CardName? = nil,
        _ fields: Logger.Metadata = [:]
    ) {
        var metadata = fields
        if let card { metadata[LogMetadataKey.card] = "\(card)" }
        log(level: level, "\(message)", metadata: kind.metadata(metadata))
    }
}

extension Logger.Metadata {
    static func card(_ card: CardConfig) -> Logger.Metadata {
        [LogMetadataKey.card: "\(card.name)", LogMetadataKey.guest: "\(card.guest)"]
    }
}
