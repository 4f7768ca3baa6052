import Crypto
import Foundation
public import CityMeshCore

/// Admin API bearer tokens: `cm_<id>_<secret>`. The node stores only SHA-256 of the whole token.
public enum AdminToken {
    /// A new token with a random 8-hex-digit id and 256 bits of secret.
    public static func generate() -> (id: String, token: String) {
        var rng = SystemRandomNumberGenerator()
        let idBytes = (0..<4).map { _ in UInt8.random(in: .min ... .max, using: &rng) }
        let secret = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &rng) }
        let id = Hex.lower(idBytes)
        let s = Data(secret).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        return (id, "cm_\(id)_\(s)")
    }

    public static func hash(_ token: String) -> [UInt8] {
        Array(SHA256.hash(data: Data(token.utf8)))
    }
}
