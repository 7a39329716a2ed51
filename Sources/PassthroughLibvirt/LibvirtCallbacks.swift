internal import CLibvirt

/// Carries one session's signal continuation through libvirt's `void *opaque`.
///
/// Each registration holds its own +1 reference, handed to libvirt and released by `releaseSignalSink` when
/// libvirt drops the callback, so a callback that fires late (after close) still finds a live object.
final class SignalSink: Sendable {
    let continuation: AsyncStream<SessionSignal>.Continuation

    init(_ continuation: AsyncStream<SessionSignal>.Continuation) {
        self.continuation = continuation
    }

    /// A +1 reference for one registration.
    func retainedOpaque() -> UnsafeMutableRawPointer { Unmanaged.passRetained(self).toOpaque() }

    static func borrowed(_ opaque: UnsafeMutableRawPointer?) -> SignalSink? {
        opaque.map { Unmanaged<SignalSink>.fromOpaque($0).takeUnretainedValue() }
    }
}

// The callbacks run on the event-loop thread. They only decode their arguments and yield: anything slow here
// would stall every event and keepalive on the connection.

func releaseSignalSink(_ opaque: UnsafeMutableRawPointer?) {
    guard let opaque else { return }
    Unmanaged<SignalSink>.fromOpaque(opaque).release()
}

func lifecycleCallback(
    _ connection: OpaquePointer?, _ domain: OpaquePointer?, _ event: Int32, _ detail: Int32,
    _ opaque: UnsafeMutableRawPointer?
) -> Int32 {
    SignalSink.borrowed(opaque)?.continuation.yield(
        .event(.lifecycle(guest: domainName(domain), LifecycleEvent(event: event, detail: detail))))
    return 0
}

func deviceRemovedCallback(
    _ connection: OpaquePointer?, _ domain: OpaquePointer?, _ alias: UnsafePointer<CChar>?,
    _ opaque: UnsafeMutableRawPointer?
) {
    SignalSink.borrowed(opaque)?.continuation.yield(
        .event(.deviceRemoved(guest: domainName(domain), alias: string(alias))))
}

func deviceRemovalFailedCallback(
    _ connection: OpaquePointer?, _ domain: OpaquePointer?, _ alias: UnsafePointer<CChar>?,
    _ opaque: UnsafeMutableRawPointer?
) {
    SignalSink.borrowed(opaque)?.continuation.yield(
        .event(.deviceRemovalFailed(guest: domainName(domain), alias: string(alias))))
}

func deviceAddedCallback(
    _ connection: OpaquePointer?, _ domain: OpaquePointer?, _ alias: UnsafePointer<CChar>?,
    _ opaque: UnsafeMutableRawPointer?
) {
    SignalSink.borrowed(opaque)?.continuation.yield(
        .event(.deviceAdded(guest: domainName(domain), alias: string(alias))))
}

func connectionClosedCallback(_ connection: OpaquePointer?, _ reason: Int32, _ opaque: UnsafeMutableRawPointer?) {
    SignalSink.borrowed(opaque)?.continuation.yield(.closed(reason: closeReason(reason)))
}

/// `virDomainGetName` reads the name cached in the domain object: no round trip to libvirtd.
private func domainName(_ domain: OpaquePointer?) -> String {
    string(domain.flatMap { virDomainGetName($0) })
}

private func string(_ text: UnsafePointer<CChar>?) -> String {
    text.map { String(cString: $0) } ?? ""
}

private func closeReason(_ reason: Int32) -> String {
    switch UInt32(bitPattern: reason) {
    case VIR_CONNECT_CLOSE_REASON_ERROR.rawValue: "I/O error on the libvirt connection"
    case VIR_CONNECT_CLOSE_REASON_EOF.rawValue: "libvirtd closed the connection"
    case VIR_CONNECT_CLOSE_REASON_KEEPALIVE.rawValue: "libvirtd stopped answering keepalives"
    case VIR_CONNECT_CLOSE_REASON_CLIENT.rawValue: "the connection was closed locally"
    default: "the connection closed (reason \(reason))"
    }
}
