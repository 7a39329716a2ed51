import Synchronization
import Testing

@testable import PassthroughThreads

#if canImport(Glibc)
import Glibc
#endif

extension String {
    fileprivate func trimmingSuffix(_ suffix: String) -> String {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) : self
    }
}

@Suite("WorkerThread")
struct WorkerThreadTests {
    struct Boom: Error, Equatable {}

    /// The kernel's thread ID, from `/proc/thread-self` → `PID/task/TID` (gettid is not in Glibc's module).
    private static func currentThreadID() -> pid_t {
        var buffer = [CChar](repeating: 0, count: 64)
        let count = readlink("/proc/thread-self", &buffer, buffer.count - 1)
        let link = String(decoding: buffer.prefix(max(count, 0)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return pid_t(link.split(separator: "/").last.flatMap { Int32($0) } ?? -1)
    }

    @Test("every call runs on the same thread, which is not the caller's, in submission order")
    func sameThreadInOrder() async throws {
        let worker = try WorkerThread(name: "test-order")
        defer { worker.stop() }
        let caller = Self.currentThreadID()
        let order = Mutex<[Int]>([])
        var threads: Set<pid_t> = []
        for index in 0..<20 {
            threads.insert(try await worker.perform {
                order.withLock { $0.append(index) }
                return Self.currentThreadID()
            })
        }
        #expect(threads.count == 1)
        #expect(threads.first != caller)
        #expect(order.withLock { $0 } == Array(0..<20))
    }

    @Test("the thread carries its name, so `top -H` shows what blocks")
    func threadName() async throws {
        let worker = try WorkerThread(name: "pa-a-very-long-name")
        defer { worker.stop() }
        let threadID = try await worker.perform { Self.currentThreadID() }
        let name = try readComm(of: threadID)
        #expect(name == "pa-a-very-long-")
    }

    private func readComm(of threadID: pid_t) throws -> String {
        let fd = open("/proc/self/task/\(threadID)/comm", O_RDONLY)
        #expect(fd >= 0)
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 64)
        let count = read(fd, &buffer, buffer.count)
        return String(decoding: buffer.prefix(max(count, 0)), as: UTF8.self).trimmingSuffix("\n")
    }

    @Test("an error thrown by a call reaches its caller unchanged; the thread keeps serving")
    func errorsPropagate() async throws {
        let worker = try WorkerThread(name: "test-errors")
        defer { worker.stop() }
        await #expect(throws: Boom.self) { try await worker.perform { throw Boom() } }
        #expect(try await worker.perform { 42 } == 42)
    }

    @Test("stop lets queued calls finish, then refuses new ones")
    func stopDrainsThenRefuses() async throws {
        let worker = try WorkerThread(name: "test-stop")
        let gate = Mutex(false)
        // A call that blocks until released, and two queued behind it.
        async let first: Int = worker.perform {
            while !gate.withLock({ $0 }) { usleep(1000) }
            return 1
        }
        async let second: Int = worker.perform { 2 }
        async let third: Int = worker.perform { 3 }
        try await Task.sleep(for: .milliseconds(50))
        gate.withLock { $0 = true }
        let stopper = Task.detached { worker.stop() }
        #expect(try await [first, second, third] == [1, 2, 3])
        await stopper.value
        await #expect(throws: WorkerThread.Stopped.self) { try await worker.perform { 4 } }
        worker.stop()  // a second stop is harmless
    }

    @Test("with several threads a call that blocks holds up only its caller; stop drains the queue and ends every thread")
    func severalThreads() async throws {
        let worker = try WorkerThread(name: "test-several", threads: 3)
        let gate = Mutex(false)
        let blocked = Task {
            try await worker.perform {
                while !gate.withLock({ $0 }) { usleep(1000) }
                return Self.currentThreadID()
            }
        }
        try await Task.sleep(for: .milliseconds(50))
        // The blocked call holds one thread; the others still serve, each call wholly on one of them.
        var threads: Set<pid_t> = []
        for _ in 0..<10 { threads.insert(try await worker.perform { Self.currentThreadID() }) }
        #expect((1...2).contains(threads.count))
        gate.withLock { $0 = true }
        let blocker = try await blocked.value
        #expect(!threads.contains(blocker))
        let served = threads.union([blocker])
        #expect(served.allSatisfy { access("/proc/self/task/\($0)", F_OK) == 0 })
        worker.stop()
        // Joined: every thread that served a call is gone. pthread_join returns once the kernel has cleared the
        // thread's tid; its /proc entry goes when the exited task is reaped, a moment later.
        let gone = { served.allSatisfy { access("/proc/self/task/\($0)", F_OK) != 0 } }
        let deadline = ContinuousClock.now + .seconds(2)
        while !gone(), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        #expect(gone())
        await #expect(throws: WorkerThread.Stopped.self) { try await worker.perform { 4 } }
    }
}
