import PassthroughAgent
import PassthroughCore
import PassthroughThreads
import Synchronization
import Testing

/// The transport as a test drives it: a guest "writes" a line, the answers each guest got are kept, and
/// every `watch` the service made is recorded.
final class FakeGuestRequestSource: GuestRequestSource {
    private struct State {
        var watches: [Set<GuestName>] = []
        var answers: [String: [String]] = [:]
    }

    let requests: AsyncStream<GuestRequestLine>
    private let lines: AsyncStream<GuestRequestLine>.Continuation
    private let state = Mutex(State())

    init() {
        (requests, lines) = AsyncStream.makeStream(of: GuestRequestLine.self)
    }

    func watch(_ guests: Set<GuestName>) async {
        state.withLock { $0.watches.append(guests) }
    }

    var watches: [Set<GuestName>] { state.withLock { $0.watches } }

    func answers(of guest: String) -> [String] { state.withLock { $0.answers[guest] ?? [] } }

    /// `guest` writes one line on its channel.
    func send(_ line: [UInt8], from guest: String) {
        lines.yield(GuestRequestLine(guest: GuestName(guest)!, line: line) { [self] answer in
            state.withLock { $0.answers[guest, default: []].append(answer) }
        })
    }

    func send(_ line: String, from guest: String) { send(Array(line.utf8), from: guest) }

    /// Writes a line and waits for the answer to it, as `echo … > port; read answer < port` does.
    func ask(_ line: String, from guest: String, sourceLocation: Testing.SourceLocation = #_sourceLocation) async throws -> String? {
        let before = answers(of: guest).count
        send(line, from: guest)
        try await waitUntil("an answer to \"\(line.prefix(40))\" from \(guest)", sourceLocation: sourceLocation) {
            answers(of: guest).count > before
        }
        let received = answers(of: guest)
        return received.count > before ? received[before] : nil
    }
}

/// ``ReflashRig`` (u200 lent to the running fpga-dev) with guest requests: the service between a fake
/// transport and the supervisor, running.
struct GuestRequestRig {
    let rig: ReflashRig
    let source = FakeGuestRequestSource()
    let service: GuestRequestService
    let task: Task<Void, Never>

    /// - Parameters:
    ///   - requests: `guest-requests` for u200.
    ///   - rateLimit: generous unless the test is about it, so a test may ask as often as it needs.
    init(requests: Bool = true, recoveryTimeout: String = "2s", dryRun: Bool = false, secondCard: Bool = false,
         clock: any WaitClock = ContinuousWaitClock(), rateLimit: GuestRequestRateLimit = GuestRequestRateLimit(burst: 100, refill: .seconds(1))!
    ) async throws {
        rig = try await ReflashRig(extraConfig: "guest-requests = \(requests)", recoveryTimeout: recoveryTimeout, dryRun: dryRun,
                                   secondCard: secondCard)
        service = GuestRequestService(supervisor: rig.supervisor, source: source, logger: rig.logs.logger(),
                                      clock: clock, rateLimit: rateLimit)
        task = Task { [service] in await service.run() }
    }

    func stop() {
        task.cancel()
        rig.loop.cancel()
    }
}
