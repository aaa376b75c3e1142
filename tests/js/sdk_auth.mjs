// PocketBase's own JavaScript SDK against a pocketjobs app (run by tests/integration/test_js_sdk.py).
//
//   node sdk_auth.mjs BASE_URL SUPERUSER_EMAIL SUPERUSER_PASSWORD [NEW_USER_EMAIL]
//
// Prints one JSON object on stdout describing what the SDK saw; the Python test asserts on
// it. Expected API errors are caught and reported in the JSON; anything unexpected (a
// network failure, an error where success was expected) exits with code 1 and a message
// on stderr.

import PocketBase, { ClientResponseError } from "pocketbase";

const [url, email, password, userEmailArg] = process.argv.slice(2);
if (!url || !email || !password) {
    console.error("usage: node sdk_auth.mjs BASE_URL EMAIL PASSWORD [NEW_USER_EMAIL]");
    process.exit(2);
}

function authState(pb) {
    return {
        token: pb.authStore.token,
        isValid: pb.authStore.isValid,
        isSuperuser: pb.authStore.isSuperuser,
        email: pb.authStore.record?.email ?? null,
        id: pb.authStore.record?.id ?? null,
        collectionName: pb.authStore.record?.collectionName ?? null,
    };
}

// Runs `fn`, which must fail with a ClientResponseError; returns what the error carried.
async function expectApiError(what, fn) {
    try {
        await fn();
    } catch (err) {
        if (err instanceof ClientResponseError && err.status >= 400 && err.status < 500) {
            return { status: err.status, message: err.response?.message ?? null, data: err.response?.data ?? null };
        }
        throw err;
    }
    throw new Error(`${what}: expected an API error, but the call succeeded`);
}

async function main() {
    const result = {};

    // -- superuser ------------------------------------------------------------------------
    const pb = new PocketBase(url);
    result.health = await pb.health.check();
    const auth = await pb.collection("_superusers").authWithPassword(email, password);
    result.superuser = { ...authState(pb), responseEmail: auth.record?.email ?? null };

    const refreshed = await pb.collection("_superusers").authRefresh();
    result.superuserRefresh = { ...authState(pb), responseToken: refreshed.token };

    result.wrongPassword = await expectApiError("wrong password", () =>
        new PocketBase(url).collection("_superusers").authWithPassword(email, password + "-wrong"),
    );
    result.refreshWithoutToken = await expectApiError("refresh without a token", () =>
        new PocketBase(url).collection("_superusers").authRefresh(),
    );

    // -- users: sign-up, login, refresh ---------------------------------------------------
    const userEmail = userEmailArg || `sdk-${Date.now()}-${Math.floor(Math.random() * 1e9)}@example.com`;
    const userPassword = "user-password-1234";
    const guest = new PocketBase(url);
    const created = await guest.collection("users").create({
        email: userEmail,
        password: userPassword,
        passwordConfirm: userPassword,
    });
    result.signUp = {
        id: created.id,
        email: created.email,
        collectionName: created.collectionName,
        keys: Object.keys(created).sort(),
    };

    result.duplicateSignUp = await expectApiError("duplicate sign-up", () =>
        guest.collection("users").create({
            email: userEmail,
            password: userPassword,
            passwordConfirm: userPassword,
        }),
    );
    result.mismatchSignUp = await expectApiError("sign-up with mismatching passwords", () =>
        guest.collection("users").create({
            email: `other-${userEmail}`,
            password: userPassword,
            passwordConfirm: userPassword + "x",
        }),
    );

    const userPb = new PocketBase(url);
    await userPb.collection("users").authWithPassword(userEmail, userPassword);
    result.user = authState(userPb);
    const userRefresh = await userPb.collection("users").authRefresh();
    result.userRefresh = { ...authState(userPb), responseToken: userRefresh.token };

    // a user's token is not a superuser's
    result.userRefreshAsSuperuser = await expectApiError("user token on _superusers", () =>
        userPb.collection("_superusers").authRefresh(),
    );

    process.stdout.write(JSON.stringify(result) + "\n");
}

main().catch((err) => {
    const detail = err instanceof ClientResponseError
        ? `ClientResponseError ${err.status} at ${err.url}: ${JSON.stringify(err.response)}`
        : (err?.stack ?? String(err));
    console.error(`sdk_auth.mjs failed: ${detail}`);
    process.exit(1);
});
