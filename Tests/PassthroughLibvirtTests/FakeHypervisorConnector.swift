import PassthroughCore
import PassthroughLibvirt
import Synchronization

/// A connector that fails a set number of times, then hands out scriptable sessions.
final class FakeHypervisorConnector: HypervisorConnector {
    private struct State {
        var failuresLeft: Int
        var attempts = 0
        var sessions: [FakeHypervisorSession] = []
    }

    private let state: Mutex<State>

    init(failuresBeforeSuccess: Int = 0) {
        state = Mutex(State(failuresLeft: failuresBeforeSuccess))
    }

    var attempts: Int { state.withLock { $0.attempts } }
    var sessions: [FakeHypervisorSession] { state.withLock { $0.sessions } }

    /// Makes the next `count` attempts fail too.
    func failNext(_ count: Int) { state.withLock { $0.failuresLeft = count } }

    func connect(signals: AsyncStream<SessionSignal>.Continuation) async throws -> any HypervisorSession {
        try state.withLock { state in
            state.attempts += 1
            if state.failuresLeft > 0 {
                state.failuresLeft -= 1
                throw LibvirtError(
                    code: 38, domain: 7, message: "Failed to connect socket to '/run/libvirt/libvirt-sock'",
                    operation: "virConnectOpen")
            }
            let session = FakeHypervisorSession(signals: signals)
            state.sessions.append(session)
            return session
        }
    }
}

/// A session whose callbacks the test fires by hand.
final class FakeHypervisorSession: HypervisorSession {
    private let signals: AsyncStream<SessionSignal>.Continuation
    private let registrations = Atomic<Int>(0)
    private let closed = Atomic<Bool>(false)
    private let attached = Mutex<[PCIAddress]>([])

    init(signals: AsyncStream<SessionSignal>.Continuation) {
        self.signals = signals
    }

    var registrationCount: Int { registrations.load(ordering: .relaxed) }
    var isClosed: Bool { closed.load(ordering: .relaxed) }
    var attachedAddresses: [PCIAddress] { attached.withLock { $0 } }

    /// As libvirt's close callback would.
    func drop(reason: String) { signals.yield(.closed(reason: reason)) }

    /// As a domain event callback would.
    func emit(_ event: HypervisorEvent) { signals.yield(.event(event)) }

    func registerEventCallbacks() async throws { registrations.add(1, ordering: .relaxed) }
    func close() async { closed.store(true, ordering: .relaxed) }

    func guestState(_ guest: GuestName) async throws -> GuestState { guest.rawValue == "fpga-guest" ? .running : .absent }
    func hostdevs(of guest: GuestName) async throws -> [Hostdev] { [] }
    func guestsHolding(_ functions: Set<PCIAddress>) async throws -> [GuestName: [PCIAddress]] { [:] }
    func attach(_ address: PCIAddress, to guest: GuestName) async throws { attached.withLock { $0.append(address) } }
    func detach(_ address: PCIAddress, from guest: GuestName) async throws {}
    func requestChannel(of guest: GuestName) async throws -> GuestRequestChannel { .absent }
    func addRequestChannel(to guest: GuestName) async throws {}
}
