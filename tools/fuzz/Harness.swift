// libFuzzer entry point for the parsers of files a user hands to blockwise: the IDX reader
// (plain and gzip, images and labels) and the device-profile parser. Built by tools/fuzz with
// the reader's and the parser's own source files, so it fuzzes exactly the shipped code.
// A crash, a sanitizer report or a parse that returns sizes other than the file's is a failure;
// a thrown DataError or ProfileError is the expected answer to bad input.
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func blockwiseFuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let selector = data[0]
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    switch selector % 3 {
    case 0, 1:
        let dimensions = selector % 3 == 0 ? 3 : 1
        do {
            let array = try IDXReader.parse(bytes, path: "fuzz-input", expectedDimensions: dimensions)
            let announced = array.dimensions.reduce(1, *)
            precondition(array.bytes.count == announced, "parsed \(array.bytes.count) bytes where the header announces \(announced)")
            precondition(array.dimensions.allSatisfy { $0 > 0 }, "a zero size was accepted")
        } catch is DataError {
        } catch {
            preconditionFailure("IDXReader threw something other than a DataError: \(error)")
        }
    default:
        do {
            let profile = try DeviceProfile.parse(Data(bytes), file: "fuzz-input.json")
            precondition(profile.budgetBytes > 0 && profile.rates.convolutionGflops.isFinite, "an invalid profile validated")
        } catch is ProfileError {
        } catch {
            preconditionFailure("DeviceProfile.parse threw something other than a ProfileError: \(error)")
        }
    }
    return 0
}
