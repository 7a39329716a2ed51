import PassthroughCore
import PassthroughLibvirt
import Synchronization

/// Everything the daemon is in the middle of — a pass, a worker call, a libvirt call, a control
/// command — with when it started, so the watchdog can tell "busy" from "stuck". A call stuck in the
/// kernel (an unbind waiting for a guest) or in libvirtd (an RPC QEMU never answers) stops the pings,
/// and systemd sees it, instead of a daemon that looks alive and does nothing.
final class InFlightWork: Sendable {
    private struct Entry {
        var what: String
        var started: ContinuousClock.Instant
        /// How long this kind of work may legitimately take.
        var limit: Duration
    }

    private let entries = Mutex<(next: Int, running: [Int: Entry])>((0, [:]))
    /// The limit for work that does not name its own.
    let defaultLimit: Duration

    init(defaultLimit: Duration) {
        self.defaultLimit = defaultLimit
    }

    /// Marks `what` as started; pass the token to ``end(_:)`` when it is over.
    func begin(_ what: String, limit: Duration? = nil) -> Int {
        let entry = Entry(what: what, started: .now, limit: limit ?? defaultLimit)
        return entries.withLock { state in
            state.next += 1
            state.running[state.next] = entry
            return state.next
        }
    }

    func end(_ token: Int) {
        _ = entries.withLock { $0.running.removeValue(forKey: token) }
    }

    /// What has run past its limit, longest first, e.g. `["worker call (sysfs) for 131 s"]`.
    func stuck(now: ContinuousClock.Instant = .now) -> [String] {
        entries.withLock { state in
            state.running.values
                .filter { now - $0.started > $0.limit }
                .sorted { $0.started < $1.started }
                .map { "\($0.what) for \((now - $0.started).components.seconds) s" }
        }
    }
}

/// The hypervisor seam with every call counted as work in flight: an RPC that never returns is the
/// commonest way for a libvirt client to hang.
struct TrackedHypervisor: Hypervisor {
    let base: any Hypervisor
    let work: InFlightWork

    func guestState(_ guest: GuestName) async throws -> GuestState {
        let token = work.begin("libvirt: state of \(guest)")
        defer { work.end(token) }
        return try await base.guestState(guest)
    }

    func hostdevs(of guest: GuestName) async throws -> [Hostdev] {
        let token = work.begin("libvirt: live XML of \(guest)")
        defer { work.end(token) }
        return try await base.hostdevs(of: guest)
    }

    func attach(_ address: PCIAddress, to guest: GuestName) async throws {
        let token = work.begin("libvirt: attach \(address) to \(guest)")
        defer { work.end(token) }
        try await base.attach(address, to: guest)
    }

    func guestsHolding(_ functions: Set<PCIAddress>) async throws -> [GuestName: [PCIAddress]] {
        let token = work.begin("libvirt: live XML of every running domain")
        defer { work.end(token) }
        return try await base.guestsHolding(functions)
    }

    func detach(_ address: PCIAddress, from guest: GuestName) async throws {
        let token = work.begin("libvirt: detach \(address) from \(guest)")
        defer { work.end(token) }
        try await base.detach(address, from: guest)
    }

    func requestChannel(of guest: GuestName) async throws -> GuestRequestChannel {
        let token = work.begin("libvirt: request channel of \(guest)")
        defer { work.end(token) }
        return try await base.requestChannel(of: guest)
    }

    func addRequestChannel(to guest: GuestName) async throws {
        let token = work.begin("libvirt: hot-add the request channel to \(guest)")
        defer { work.end(token) }
        try await base.addRequestChannel(to: guest)
    }
}
