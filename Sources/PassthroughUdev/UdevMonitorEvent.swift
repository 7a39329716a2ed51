/// What ``UdevMonitor`` delivers, in order.
///
/// The sequence is: one coldplug snapshot (`device` events with `isColdplug == true`, then
/// `coldplugComplete`), then hotplug `device` events as they happen. Events that arrive while the
/// snapshot is taken are delivered after it, so a device may show up twice; treat events as
/// idempotent state updates.
///
/// When the monitor loses track while listening (socket overflow, a receive error, or a uevent it
/// cannot decode) it sends `resync` and then a fresh snapshot ending in another
/// `coldplugComplete`. A `resync` raised *during* a snapshot (an existing device that cannot be
/// decoded) starts no further snapshot.
public enum UdevMonitorEvent: Hashable, Sendable {
    case device(UdevEvent)
    /// The end of a snapshot; `count` is the number of `device` events it produced.
    case coldplugComplete(count: Int)
    /// The picture may be incomplete; the reason was also logged.
    case resync(UdevResyncReason)
    /// The monitor cannot go on; this is the last event before the stream finishes.
    case failed(UdevError)
}
