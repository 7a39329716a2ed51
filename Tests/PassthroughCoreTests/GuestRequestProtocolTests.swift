import PassthroughCore
import Testing

@Suite("Guest request protocol v1")
struct GuestRequestProtocolTests {
    private static let u200 = CardName("u200")!

    static let accepted: [(line: String, request: GuestRequest)] = [
        ("prepare u200", .prepare(u200)),
        ("finish u200", .finish(u200)),
        ("status", .status),
        ("version", .version),
        ("  prepare   u200  ", .prepare(u200)),          // spaces around and between words do not matter
        ("finish u200\r", .finish(u200)),               // a Windows guest's line end
        ("prepare fpga-0", .prepare(CardName("fpga-0")!)),
    ]

    @Test("accepted lines", arguments: accepted)
    func accepts(line: String, request: GuestRequest) {
        #expect(GuestRequest.decode(Array(line.utf8)) == .success(request))
    }

    static let rejected: [(name: String, line: [UInt8], error: GuestRequestError)] = [
        ("empty", [], .empty),
        ("only spaces", Array("    ".utf8), .empty),
        ("300 bytes", Array(("prepare " + String(repeating: "a", count: 292)).utf8), .tooLong),
        ("257 bytes", Array(String(repeating: " ", count: 257).utf8), .tooLong),
        ("NUL", Array("prepare u200".utf8) + [0] + Array("x".utf8), .controlCharacter),
        ("tab between words", Array("prepare\tu200".utf8), .controlCharacter),
        ("a newline inside", Array("status\nprepare u200".utf8), .controlCharacter),
        ("escape sequence", [0x1B] + Array("[2Jstatus".utf8), .controlCharacter),
        ("DEL", Array("status".utf8) + [0x7F], .controlCharacter),
        ("UTF-8 card name", Array("prepare u200é".utf8), .notASCII),
        ("a lone 0xff", Array("status ".utf8) + [0xFF], .notASCII),
        ("upper case verb", Array("PREPARE u200".utf8), .unknownVerb("PREPARE")),
        ("capitalised verb", Array("Status".utf8), .unknownVerb("Status")),
        ("unknown verb", Array("reboot".utf8), .unknownVerb("reboot")),
        ("the host CLI's words", Array("reflash u200 --prepare".utf8), .unknownVerb("reflash")),
        ("status with a card", Array("status u200".utf8), .unexpectedArgument(.status)),
        ("version with a word", Array("version 2".utf8), .unexpectedArgument(.version)),
        ("prepare without a card", Array("prepare".utf8), .needsOneCard(.prepare)),
        ("prepare with two cards", Array("prepare u200 u250".utf8), .needsOneCard(.prepare)),
        ("finish with an extra word", Array("finish u200 now".utf8), .needsOneCard(.finish)),
        ("a PCI address", Array("prepare 0000:01:00.0".utf8), .notACardName("0000:01:00.0")),
        ("a path", Array("prepare /sys/bus/pci/devices/0000:01:00.0/remove".utf8),
         .notACardName("/sys/bus/pci/devices/0000:01:00.0/remove")),
        ("a driver-ish name", Array("finish vfio_pci".utf8), .notACardName("vfio_pci")),
        ("an upper-case card", Array("prepare U200".utf8), .notACardName("U200")),
    ]

    @Test("rejected lines: error bad-request with the reason", arguments: rejected)
    func rejects(name: String, line: [UInt8], error: GuestRequestError) {
        #expect(GuestRequest.decode(line) == .failure(error), "\(name)")
    }

    @Test("256 bytes is the limit, and a trailing CR does not count")
    func lengthLimit() {
        let exactly = Array(("status" + String(repeating: " ", count: 250)).utf8)
        #expect(exactly.count == 256)
        #expect(GuestRequest.decode(exactly) == .success(.status))
        #expect(GuestRequest.decode(exactly + [0x0D]) == .success(.status))
        #expect(GuestRequest.decode(exactly + [0x20]) == .failure(.tooLong))
    }

    @Test("every accepted request is its own wire form")
    func roundTrip() {
        for (_, request) in Self.accepted {
            #expect(GuestRequest.decode(Array(request.description.utf8)) == .success(request))
        }
    }

    @Test("answers: `ok TEXT` or `error CODE TEXT`, one printable ASCII line whatever the text holds")
    func answerLines() {
        #expect(GuestAnswer.version.line == "ok passthrough-agent guest-protocol 1")
        #expect(GuestAnswer.ok("u200=attached u250=held").line == "ok u200=attached u250=held")
        #expect(GuestAnswer.ok("").line == "ok")
        #expect(GuestAnswer.error(.unknownCard, "no card u250 for this guest").line == "error unknown-card no card u250 for this guest")
        #expect(GuestAnswer.error(.rateLimited, "x").line == "error rate-limited x")
        #expect(GuestAnswer.error(.notOnBus, "x").line == "error not-on-bus x")
        #expect(GuestAnswer.error(.badRequest, "two\nlines\tand é").line == "error bad-request two?lines?and ??")
        let long = GuestAnswer.ok(String(repeating: "x", count: 5000)).line
        #expect(long.utf8.count == "ok ".utf8.count + 1024)
    }

    @Test("20,000 seeded random lines made of request pieces and hostile bytes: an accepted one is its own wire form and at most 256 bytes; every answer is one printable ASCII line")
    func randomLines() {
        let pieces: [[UInt8]] = ["prepare", "finish", "status", "version", " ", "  ", "u200", "fpga-0", "-", "U", "0000:01:00.0",
                                 "/sys", "\r", "\t", "\n"].map { Array($0.utf8) } + [[0], [0xFF], [0xC3, 0xA9], [0x7F], [0x1B]]
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next(_ bound: Int) -> Int {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return Int(state % UInt64(bound))
        }
        var accepted = 0
        for _ in 0..<20_000 {
            var line: [UInt8] = []
            for _ in 0..<next(8) { line += pieces[next(pieces.count)] }
            if next(20) == 0 { line += [UInt8](repeating: next(2) == 0 ? 0x61 : 0x20, count: next(300)) }
            switch GuestRequest.decode(line) {
            case .success(let request):
                accepted += 1
                #expect(line.count <= GuestRequest.maximumLength + 1)
                #expect(GuestRequest.decode(Array(request.description.utf8)) == .success(request))
            case .failure(let error):
                let answer = GuestAnswer.error(.badRequest, error.description).line
                #expect(answer.utf8.allSatisfy { $0 >= 0x20 && $0 <= 0x7E }, "\(line)")
            }
        }
        // The generator does reach the accepting paths, not only the rejections.
        #expect(accepted > 100)
    }

    @Test("a rejection quotes at most 32 bytes of the guest's words back")
    func echoIsBounded() {
        let word = String(repeating: "z", count: 200)
        let error = GuestRequest.decode(Array(word.utf8))
        guard case .failure(let reason) = error else {
            Issue.record("accepted \(word)")
            return
        }
        #expect(reason.description.hasPrefix("unknown request '\(String(repeating: "z", count: 32))...'"))
    }
}
