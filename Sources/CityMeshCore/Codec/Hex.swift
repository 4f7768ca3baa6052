/// Lowercase hex, the way every hash and id in CityMesh is written. `String(format: "%02x")` per
/// byte went through Foundation's formatter: a quarter of a 400-node simulation's time went to
/// writing receipt and document ids with it.
public enum Hex {
    static let digits = Array("0123456789abcdef".utf8)

    public static func lower<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        var out = [UInt8]()
        out.reserveCapacity(bytes.underestimatedCount * 2)
        for x in bytes {
            out.append(digits[Int(x >> 4)])
            out.append(digits[Int(x & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
