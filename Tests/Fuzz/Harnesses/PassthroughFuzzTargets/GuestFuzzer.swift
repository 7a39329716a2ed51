import PassthroughCore

/// `guest`: the guest request decoder; each input is one line a guest may write on its request channel,
/// without its newline (a guest is untrusted: any bytes, any length).
///
/// An accepted request is its own wire form, and no line longer than the limit is ever accepted; the
/// answer to a rejected one, which quotes the guest's words back, is one printable ASCII line.
@_cdecl("passthrough_fuzz_guest")
public func fuzzGuest(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    switch GuestRequest.decode(UnsafeBufferPointer(start: data, count: size)) {
    case .success(let request):
        guard size <= GuestRequest.maximumLength + 1 else {
            fatalError("a line of \(size) bytes was accepted as \(request)")
        }
        guard case .success(let again) = GuestRequest.decode(Array(request.description.utf8)), again == request else {
            fatalError("\(request) is written as \"\(request)\", which does not read back as itself")
        }
    case .failure(let error):
        let line = GuestAnswer.error(.badRequest, error.description).line
        guard line.utf8.allSatisfy({ $0 >= 0x20 && $0 <= 0x7E }) else {
            fatalError("the answer to a rejected line is not one printable ASCII line: \(line.utf8.map { $0 })")
        }
    }
    return 0
}
