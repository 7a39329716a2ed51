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

/// The hypervisor seam with one job at a time per guest: attaches, detaches and channel hot-adds to one guest
/// queue here, in the order they came.
///
/// libvirt runs one job per domain: a second attach to a guest waits inside libvirtd for the first and
/// gives up after 30 s ("cannot acquire state change lock"). Eight cards of one guest reflashed at once would
/// queue there, the last ones failing under load; here they wait without a limit, each one's driver moves
/// already done, so the guest's next job starts the moment the previous one ends. Reads need no job and
/// pass straight through.
struct OneJobPerGuest: Hypervisor {
    private actor Queue {
        private var busy: Set<GuestName> = []
        private var waiting: [GuestName: [CheckedContinuation<Void, Never>]] = [:]

        func acquire(_ guest: GuestName) async {
            if busy.insert(guest).inserted { return }
            await withCheckedContinuation { waiting[guest, default: []].append($0) }
        }

        /// Hands the guest to the next job waiting for it, if any.
        func release(_ guest: GuestName) {
            guard var queue = waiting[guest], !queue.isEmpty else {
                busy.remove(guest)
                return
            }
            let next = queue.removeFirst()
            waiting[guest] = queue.isEmpty ? nil : queue
            next.resume()
        }
    }

    let base: any Hypervisor
    private let queue = Queue()

    init(base: any Hypervisor) {
        self.base = base
    }

    private func job(for guest: GuestName, _ body: () async throws -> Void) async throws {
        await queue.acquire(guest)
        do {
            try await body()
        } catch {
            await queue.release(guest)
            throw error
        }
        await queue.release(guest)
    }

    func attach(_ address: PCIAddress, to guest: GuestName) async throws {
        try await job(for: guest) { try await base.attach(address, to: guest) }
    }

    func detach(_ address: PCIAddress, from guest: GuestName) async throws {
        try await job(for: guest) { try await base.detach(address, from: guest) }
    }

    func addRequestChannel(to guest: GuestName) async throws {
        try await job(for: guest) { try await base.addRequestChannel(to: guest) }
    }

    func guestState(_ guest: GuestName) async throws -> GuestState { try await base.guestState(guest) }

    func hostdevs(of guest: GuestName) async throws -> [Hostdev] { try await base.hostdevs(of: guest) }

    func guestsHolding(_ functions: Set<PCIAddress>) async throws -> [GuestName: [PCIAddress]] {
        try await base.guestsHolding(functions)
    }

    func requestChannel(of guest: GuestName) async throws -> GuestRequestChannel { try await base.requestChannel(of: guest) }
}

/// `--dry-run`'s libvirt: reads pass through, and every change to a guest's live definition (an attach, a
/// detach, a request channel's hot-add) is refused here, whichever part of the daemon asks. The supervisor
/// plans and never asks; the guests' request channels would hot-add a channel to every running guest.
struct ChangesNothing: Hypervisor {
    /// A change `--dry-run` did not make.
    struct Refusal: Error, CustomStringConvertible {
        let change: String
        var description: String { "the agent runs with --dry-run and changes nothing: not going to \(change)" }
    }

    let base: any Hypervisor

    func attach(_ address: PCIAddress, to guest: GuestName) async throws {
        throw Refusal(change: "attach \(address) to \(guest)")
    }

    func detach(_ address: PCIAddress, from guest: GuestName) async throws {
        throw Refusal(change: "detach \(address) from \(guest)")
    }

    func addRequestChannel(to guest: GuestName) async throws {
        throw Refusal(change: "hot-add the request channel to \(guest)")
    }

    func guestState(_ guest: GuestName) async throws -> GuestState { try await base.guestState(guest) }

    func hostdevs(of guest: GuestName) async throws -> [Hostdev] { try await base.hostdevs(of: guest) }

    func guestsHolding(_ functions: Set<PCIAddress>) async throws -> [GuestName: [PCIAddress]] {
        try await base.guestsHolding(functions)
    }

    func requestChannel(of guest: GuestName) async throws -> GuestRequestChannel { try await base.requestChannel(of: guest) }
}
