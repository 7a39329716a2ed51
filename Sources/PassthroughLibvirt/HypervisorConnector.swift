/// What an open session reports to its supervisor, straight from libvirt's callbacks.
public enum SessionSignal: Hashable, Sendable {
    case event(HypervisorEvent)
    /// The connection dropped (libvirtd restarted, keepalive timed out, I/O error).
    case closed(reason: String)
}

/// One open connection to the hypervisor.
public protocol HypervisorSession: Hypervisor {
    /// Registers every domain event callback; called once per session, after connecting.
    func registerEventCallbacks() async throws
    /// Deregisters the callbacks and closes the connection. Signals may still arrive briefly afterwards.
    func close() async
}

/// Opens sessions: the seam that lets reconnect logic be tested without libvirt.
public protocol HypervisorConnector: Sendable {
    /// Opens a session whose callbacks yield into `signals`, including its own `.closed`.
    func connect(signals: AsyncStream<SessionSignal>.Continuation) async throws -> any HypervisorSession
}
