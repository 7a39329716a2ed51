#if canImport(Glibc)
import Glibc
#endif
import InMemoryLogging
import Logging
@testable import PassthroughAgent
import PassthroughCore
import PassthroughLibvirt
import PassthroughSystemd
import PassthroughTestSupport
import PassthroughThreads
import Synchronization
import SystemPackage
import Testing

/// QEMU's side of one guest's channel: a unix socket it listens on (`<source mode='bind'/>`), accepting one
/// connection, as a virtio-serial chardev does. What the "guest" writes is written here.
final class FakeQEMUChannel: Sendable {
    let path: FilePath
    private let listener = Mutex<CInt?>(nil)

    init(path: FilePath) throws(Errno) {
        self.path = path
        try listen()
    }

    deinit { stopListening() }

    /// Binds and listens again (QEMU after a guest restart).
    func listen() throws(Errno) {
        let fd = try UnixSocket.streamSocket()
        _ = path.withPlatformString { unlink($0) }
        guard UnixSocket.withAddress(path, { bind(fd, $0, $1) }) == 0, Glibc.listen(fd, 4) == 0 else {
            let error = Errno(rawValue: errno)
            UnixSocket.close(fd)
            throw error
        }
        try UnixSocket.makeNonBlockingCloseOnExec(fd)
        listener.withLock { $0 = fd }
    }

    /// Closes the listening socket and removes its file (QEMU exited).
    func stopListening() {
        listener.withLock { fd in
            if let open = fd { UnixSocket.close(open) }
            fd = nil
        }
        _ = path.withPlatformString { unlink($0) }
    }

    /// The agent's connection, once it comes.
    func accept(timeout: Duration = .seconds(10)) async throws -> RawConnection {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let fd = listener.withLock({ $0 }) {
                let accepted = Glibc.accept(fd, nil, nil)
                if accepted >= 0 { return try RawConnection(adopting: accepted) }
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        throw Errno.timedOut
    }

    /// Whether a connection is waiting in the backlog (without accepting it).
    func hasPendingConnection() -> Bool {
        guard let fd = listener.withLock({ $0 }) else { return false }
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, 0) > 0
    }
}

/// Every line the source hands over, collected as it arrives.
final class RequestCollector: Sendable {
    private final class Lines: Sendable {
        let value = Mutex<[GuestRequestLine]>([])
    }

    private let lines = Lines()
    private let task: Task<Void, Never>

    init(_ requests: AsyncStream<GuestRequestLine>) {
        let lines = self.lines
        task = Task { for await request in requests { lines.value.withLock { $0.append(request) } } }
    }

    deinit { task.cancel() }

    var all: [GuestRequestLine] { lines.value.withLock { $0 } }
    func texts(of guest: String) -> [String] {
        all.filter { $0.guest.rawValue == guest }.map { String(decoding: $0.line, as: UTF8.self) }
    }

    /// Waits for the `index`-th line of `guest` (0-based).
    func line(_ index: Int, of guest: String, timeout: Duration = .seconds(10)) async throws -> GuestRequestLine {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let mine = all.filter { $0.guest.rawValue == guest }
            if mine.count > index { return mine[index] }
            try await Task.sleep(for: .milliseconds(5))
        }
        throw Errno.timedOut
    }
}

@Suite(.serialized, .timeLimit(.minutes(1)))
struct GuestChannelsTests {
    let dir = FakeSysfs()
    let logs = InMemoryLogHandler()
    let hypervisor: FakeHypervisor
    let channels: GuestChannels
    let collector: RequestCollector

    init() throws {
        hypervisor = FakeHypervisor(bus: EmulatedPCIBus(dir))
        let handler = logs
        channels = try GuestChannels(
            hypervisor: hypervisor, backoff: Backoff(initial: .milliseconds(20), cap: .milliseconds(100))!,
            logger: Logger(label: "test") { _ in handler })
        collector = RequestCollector(channels.requests)
    }

    /// A running guest whose live XML names a channel QEMU listens on.
    func guest(_ name: String, withChannel: Bool = true) async throws -> FakeQEMUChannel {
        await hypervisor.define(name, state: .running)
        let qemu = try FakeQEMUChannel(path: dir.root.appending("\(name).sock"))
        if withChannel { await hypervisor.setRequestChannel(.listening(socketPath: qemu.path.string), of: name) }
        return qemu
    }

    func name(_ text: String) -> GuestName { GuestName(text)! }

    func running<T>(_ body: () async throws -> T) async throws -> T {
        let channels = self.channels
        let runner = Task { try await channels.run() }
        defer { runner.cancel() }
        let result = try await body()
        runner.cancel()
        try await runner.value
        return result
    }

    @Test func aLineComesOutWithItsGuestAndTheAnswerGoesBackOnItsSocket() async throws {
        let qemu = try await guest("alpha")
        try await running {
            await channels.watch([name("alpha")])
            let connection = try await qemu.accept()
            try connection.send("prepare u200\n")
            let request = try await collector.line(0, of: "alpha")
            #expect(request.guest == name("alpha"))
            #expect(request.line == Array("prepare u200".utf8))
            request.answer("ok prepared u200\nsneaky")
            let answer = await offPool { connection.receive(lines: 1, timeout: .seconds(5)) }
            #expect(answer.text == "ok prepared u200 sneaky\n", "one line, whatever the decider wrote")
            // A second answer to the same line is not sent.
            request.answer("ok again")
            let more = await offPool { connection.receive(lines: 1, timeout: .milliseconds(200)) }
            #expect(more.text == "")
        }
        #expect(await hypervisor.channelHotAdds == [], "the live XML had the channel")
    }

    @Test func oneRequestInFlightPerGuest() async throws {
        let qemu = try await guest("alpha")
        let other = try await guest("beta")
        try await running {
            await channels.watch([name("alpha"), name("beta")])
            let connection = try await qemu.accept()
            let busy = try await other.accept()
            try connection.send("status\nfinish u200\n")
            let first = try await collector.line(0, of: "alpha")
            // Another guest keeps the channel thread busy meanwhile: many wake-ups, none of them alpha's turn.
            for index in 0..<5 {
                try busy.send("status\n")
                try await collector.line(index, of: "beta").answer("ok")
                _ = await offPool { busy.receive(lines: 1, timeout: .seconds(5)) }
            }
            #expect(collector.texts(of: "alpha") == ["status"], "the second waits for the first answer")
            first.answer("ok")
            _ = try await collector.line(1, of: "alpha")
            #expect(collector.texts(of: "alpha") == ["status", "finish u200"])
        }
    }

    @Test func aMissingChannelIsHotAddedThenReadAgain() async throws {
        let qemu = try await guest("alpha", withChannel: false)
        await hypervisor.allowChannelHotAdd(to: "alpha", socketPath: qemu.path.string)
        try await running {
            await channels.watch([name("alpha")])
            _ = try await qemu.accept()
            #expect(await hypervisor.channelHotAdds == ["alpha"])
            try await waitUntil("connected", timeout: .seconds(10)) { await channels.connectedGuests == [name("alpha")] }
        }
    }

    /// `--dry-run` changes nothing, and a request channel's hot-add is a change to the guest's live definition:
    /// through a dry-run supervisor's libvirt seam, the one the daemon hands the channels, it is refused and said.
    @Test func aDryRunNeverHotAddsTheChannel() async throws {
        var options = CardSupervisor.Options.fast
        options.dryRun = true
        let fixture = try await DaemonFixture.make(options: options)
        let qemu = try FakeQEMUChannel(path: dir.root.appending("fpga-dev.sock"))
        await fixture.hypervisor.allowChannelHotAdd(to: "fpga-dev", socketPath: qemu.path.string)
        let handler = logs
        let dryRunChannels = try GuestChannels(
            hypervisor: await fixture.supervisor.hypervisor, backoff: Backoff(initial: .milliseconds(20), cap: .milliseconds(100))!,
            logger: Logger(label: "test") { _ in handler })
        let runner = Task { try await dryRunChannels.run() }
        await dryRunChannels.watch([name("fpga-dev")])
        try await waitUntil("a warning", timeout: .seconds(10)) { logs.entries.contains { $0.level == .warning } }
        runner.cancel()
        try await runner.value
        #expect(await fixture.hypervisor.channelHotAdds == [])
        #expect(try await fixture.hypervisor.requestChannel(of: name("fpga-dev")) == .absent)
        #expect(!qemu.hasPendingConnection())
        let warning = try #require(logs.entries.first { $0.level == .warning })
        #expect("\(warning.metadata["error"] ?? "")".contains("--dry-run"))
    }

    @Test func aGuestWithoutAVirtioSerialControllerIsReportedWithWhatToAdd() async throws {
        let qemu = try await guest("alpha", withChannel: false)
        try await running {
            await channels.watch([name("alpha")])
            try await waitUntil("a warning", timeout: .seconds(10)) { logs.entries.contains { $0.level == .warning } }
        }
        #expect(await hypervisor.channelHotAdds.first == "alpha")
        #expect(!qemu.hasPendingConnection())
        #expect(await channels.connectedGuests == [])
        let warning = try #require(logs.entries.first { $0.level == .warning })
        #expect(warning.metadata[LogMetadataKey.guest] == "alpha")
        #expect("\(warning.metadata["error"] ?? "")".contains("<controller type='virtio-serial'/>"))
    }

    @Test func aChannelOfTheHostOwnersThatCannotBeUsedIsLeftAlone() async throws {
        _ = try await guest("alpha", withChannel: false)
        await hypervisor.setRequestChannel(.unusable("its socket has mode 'connect'"), of: "alpha")
        try await running {
            await channels.watch([name("alpha")])
            try await waitUntil("a warning", timeout: .seconds(10)) { logs.entries.contains { $0.level == .warning } }
        }
        #expect(await hypervisor.channelHotAdds == [], "no second channel next to the owner's")
        let warning = try #require(logs.entries.first { $0.level == .warning })
        #expect("\(warning.metadata["error"] ?? "")".contains("mode 'connect'"))
    }

    /// A libvirt call that never returns (a wedged libvirtd) delays only the connecting, never the caller of
    /// `watch`, nor a guest already connected.
    @Test func watchReturnsAtOnceWhileLibvirtHangs() async throws {
        let qemu = try await guest("alpha")
        _ = try await guest("beta", withChannel: false)
        try await running {
            await channels.watch([name("alpha")])
            let connection = try await qemu.accept()
            await hypervisor.hang(.channel)
            let started = ContinuousClock.now
            await channels.watch([name("alpha"), name("beta")])
            #expect(ContinuousClock.now - started < .seconds(1))
            try connection.send("status\n")
            try await collector.line(0, of: "alpha").answer("ok")
            #expect(await offPool { connection.receive(lines: 1, timeout: .seconds(5)) }.text == "ok\n")
            await hypervisor.unhang(.channel)
        }
    }

    @Test func whenQEMUClosesTheChannelItIsReconnectedOnceQEMUListensAgain() async throws {
        let qemu = try await guest("alpha")
        try await running {
            await channels.watch([name("alpha")])
            let connection = try await qemu.accept()
            // The guest stops: QEMU goes away with its socket.
            qemu.stopListening()
            connection.hangUp()
            try await waitUntil("the loss is noticed", timeout: .seconds(10)) {
                await channels.connectedGuests.isEmpty
            }
            try await Task.sleep(for: .milliseconds(150))  // a few failed attempts while nobody listens
            try qemu.listen()
            let again = try await qemu.accept()
            try again.send("status\n")
            let request = try await collector.line(0, of: "alpha")
            request.answer("ok")
            #expect(await offPool { again.receive(lines: 1, timeout: .seconds(5)) }.text == "ok\n")
        }
        #expect(logs.entries.contains { $0.message.description.contains("channel lost") })
    }

    @Test func twoGuestsAtOnceAndAFloodWithoutNewlineDelaysNobody() async throws {
        let flooder = try await guest("flooder")
        let quiet = try await guest("quiet")
        try await running {
            await channels.watch([name("flooder"), name("quiet")])
            let flood = try await flooder.accept()
            let calm = try await quiet.accept()
            let stop = Flag()
            let flooding = Task.detached {
                await offPool {
                    let junk = [UInt8](repeating: UInt8(ascii: "x"), count: 4096)
                    while !stop.isRaised { _ = junk.withUnsafeBytes { send(flood.fd, $0.baseAddress, $0.count, CInt(MSG_NOSIGNAL)) } }
                }
            }
            try await Task.sleep(for: .milliseconds(100))
            let started = ContinuousClock.now
            try calm.send("status\n")
            let request = try await collector.line(0, of: "quiet", timeout: .seconds(5))
            #expect(ContinuousClock.now - started < .seconds(1))
            request.answer("ok")
            #expect(await offPool { calm.receive(lines: 1, timeout: .seconds(5)) }.text == "ok\n")
            stop.raise()
            await flooding.value
            // The flood is one line too long: answered once, nothing handed over.
            let answer = await offPool { flood.receive(lines: 1, timeout: .seconds(5)) }
            #expect(answer.text == "error bad-request line too long\n")
            #expect(collector.texts(of: "flooder") == [])
            // Its end and the next line are read as usual.
            try flood.send("\nstatus\n")
            _ = try await collector.line(0, of: "flooder")
            #expect(collector.texts(of: "flooder") == ["status"])
        }
    }

    @Test func aLineTooLongIsAnsweredAndSkippedAndTheNextOneCounts() async throws {
        let qemu = try await guest("alpha")
        try await running {
            await channels.watch([name("alpha")])
            let connection = try await qemu.accept()
            let longest = String(repeating: "y", count: GuestChannels.maximumLineBytes)
            try connection.send(String(repeating: "x", count: GuestChannels.maximumLineBytes + 1) + "\n" + longest + "\n")
            let answer = await offPool { connection.receive(lines: 1, timeout: .seconds(5)) }
            #expect(answer.text == "error bad-request line too long\n")
            let request = try await collector.line(0, of: "alpha")
            #expect(request.line.count == GuestChannels.maximumLineBytes, "exactly the limit is accepted")
        }
    }

    @Test func aGuestNoLongerNamedIsHungUp() async throws {
        let qemu = try await guest("alpha")
        let other = try await guest("beta")
        try await running {
            await channels.watch([name("alpha"), name("beta")])
            let connection = try await qemu.accept()
            let kept = try await other.accept()
            await channels.watch([name("beta")])
            let end = await offPool { connection.receive(timeout: .seconds(5)) }
            #expect(end.endOfFile, "QEMU sees the agent hang up")
            #expect(await channels.connectedGuests == [name("beta")])
            try kept.send("status\n")
            #expect(try await collector.line(0, of: "beta").line == Array("status".utf8))
        }
    }
}

/// The channel thread on its own, over a socketpair whose agent end can be made to back up.
@Suite(.timeLimit(.minutes(1)))
struct GuestChannelThreadTests {
    /// A guest that stopped reading long ago lets QEMU's buffers fill: an answer that cannot be written within
    /// the bound costs the guest its connection (to be made again), and never blocks the thread.
    @Test func anAnswerTheSocketCannotTakeInTimeDropsTheChannel() async throws {
        var pair: [CInt] = [-1, -1]
        try #require(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0, &pair) == 0)
        let (agentEnd, guestEnd) = (pair[0], pair[1])
        try UnixSocket.makeNonBlockingCloseOnExec(agentEnd)
        let guestSide = try RawConnection(adopting: guestEnd)
        // Fill the agent's side until the kernel takes no more: the guest has not read for a long time.
        let filler = [UInt8](repeating: UInt8(ascii: "."), count: 4096)
        while filler.withUnsafeBytes({ send(agentEnd, $0.baseAddress, $0.count, CInt(MSG_NOSIGNAL)) }) > 0 {}

        let wakeup = try Wakeup()
        let (requests, output) = AsyncStream.makeStream(of: GuestRequestLine.self)
        let (bell, ring) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let context = GuestChannelThreadContext(
            wakeup: wakeup, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }),
            requests: output, bell: ring)
        let body = GuestChannelThread(context: context)
        let thread = Task { await offPool { body.run() } }
        let link = GuestChannelLink(guest: GuestName("alpha")!, fd: agentEnd, wakeup: wakeup)
        context.adopt(link)

        try guestSide.send("status\n")
        var lines = requests.makeAsyncIterator()
        let request = try #require(await lines.next())
        let answered = ContinuousClock.now
        request.answer("ok")
        var rings = bell.makeAsyncIterator()
        _ = await rings.next()
        #expect(link.isLost)
        #expect(ContinuousClock.now - answered >= GuestChannels.answerTimeout)
        #expect(ContinuousClock.now - answered < GuestChannels.answerTimeout + .seconds(5))

        wakeup.shutdown()
        await thread.value
    }
}
