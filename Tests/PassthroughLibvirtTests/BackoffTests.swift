import PassthroughCore
import Testing

@Suite struct BackoffTests {
    @Test func standardScheduleDoublesFromHalfASecondUpToThirtySeconds() {
        let delays = (1...9).map { Backoff.standard.delay(afterFailures: $0) }
        #expect(delays == [
            .milliseconds(500), .seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(16),
            .seconds(30), .seconds(30), .seconds(30),
        ])
    }

    @Test func noFailuresMeansNoWait() {
        #expect(Backoff.standard.delay(afterFailures: 0) == .zero)
        #expect(Backoff.standard.delay(afterFailures: -3) == .zero)
    }

    @Test func aVeryLongOutageStaysAtTheCapWithoutOverflowing() {
        #expect(Backoff.standard.delay(afterFailures: Int.max) == .seconds(30))
    }

    @Test func capThatIsNotAPowerOfTwoMultipleIsReachedExactly() throws {
        let backoff = try #require(Backoff(initial: .seconds(1), multiplier: 3, cap: .seconds(10)))
        #expect((1...4).map { backoff.delay(afterFailures: $0) } == [.seconds(1), .seconds(3), .seconds(9), .seconds(10)])
    }

    @Test func multiplierOneIsAConstantDelay() throws {
        let backoff = try #require(Backoff(initial: .seconds(2), multiplier: 1, cap: .seconds(5)))
        #expect(backoff.delay(afterFailures: 1_000_000) == .seconds(2))
    }

    @Test func nonsensicalPoliciesAreRefused() {
        #expect(Backoff(initial: .zero, cap: .seconds(1)) == nil)
        #expect(Backoff(initial: .seconds(2), cap: .seconds(1)) == nil)
        #expect(Backoff(initial: .seconds(1), multiplier: 0, cap: .seconds(5)) == nil)
    }
}
