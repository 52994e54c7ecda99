# Fixed inputs shared by firmware tests and host fixtures (plain data: importable by both interpreters).

# client id, tenant, client secret, now (Unix s), jti
ASSERTION_INPUTS = (
    "0123456789abcdef0123456789abcdef",
    "mytenant",
    "s3cr3t-Client-Secret_value",
    1790000000,
    "1b4e28ba-2fa1-41d2-883f-0016d3cca427",
)

# The agent API paths (docs/protocol.md), pinned here apart from the firmware's own constants.
REGISTER_PATH = "/api/agentmanagement/v3/register"
TOKEN_PATH = "/api/agentmanagement/v3/oauth/token"
TOKEN_KEY_PATH = "/api/agentmanagement/v3/oauth/token_key"
MAPPINGS_PATH = "/api/mindconnect/v3/dataPointMappings"
