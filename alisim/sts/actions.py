"""STS 2015-04-01 (RPC style): GetCallerIdentity, so runbooks learn the account of their keys.

alisim's long-term keys (the published pair and the fresh one of `--allow-remote`) belong to
a RAM user `alisim`; an STS key from `/_alisim/sts` is a session of the role `alisim-role`.
Fields as documented: `UserId` only for a RAM user, `RoleId` only for an assumed role.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from alisim.openapi.params import Params
from alisim.openapi.registry import STS, ActionTable, Region

if TYPE_CHECKING:
    from alisim.cloud import Cloud

USER_NAME = "alisim"
USER_ID = "2000000000000001"
ROLE_NAME = "alisim-role"
ROLE_ID = "3000000000000001"


async def get_caller_identity(cloud: Cloud, params: Params) -> dict[str, Any]:
    account = cloud.settings.account_id
    key = cloud.credentials.get(params.caller)
    if key is not None and key.security_token is not None:
        session = key.session_name or "alisim"
        return {
            "AccountId": account,
            "Arn": f"acs:ram::{account}:assumed-role/{ROLE_NAME}/{session}",
            "IdentityType": "AssumedRoleUser",
            "PrincipalId": f"{ROLE_ID}:{session}",
            "RoleId": ROLE_ID,
        }
    return {
        "AccountId": account,
        "Arn": f"acs:ram::{account}:user/{USER_NAME}",
        "IdentityType": "RAMUser",
        "PrincipalId": USER_ID,
        "UserId": USER_ID,
    }


ACTIONS = ActionTable(
    STS,
    {
        "GetCallerIdentity": get_caller_identity,
    },
    region=Region.NONE,
)
