import Synchronization
import Testing

import PassthroughThreads

@Suite("BlockingCalls")
struct BlockingCallsTests {
    struct Refused: Error, Equatable { let code: Int }

    @Test("the runner decides where the call runs; its value and its typed error come back to the caller")
    func valuesAndTypedErrors() async throws {
        let runs = Mutex(0)
        let counting = BlockingCalls { call in
            runs.withLock { $0 += 1 }
            call()
        }
        #expect(await counting.run { 7 } == 7)
        do {
            _ = try await counting.run { () throws(Refused) -> Int in throw Refused(code: 16) }
            Issue.record("no error")
        } catch {
            #expect(error == Refused(code: 16))  // typed: no cast needed
        }
        #expect(runs.withLock { $0 } == 2)
    }
}
