// @discordjs/rest, unchanged, pointed at the Discord passthrough with a
// session ID as its bot token (tests/library_compat.rs runs this).
//
//   DJS_API=http://127.0.0.1:PORT/api/discord DJS_TOKEN=<sessionId> \
//   DJS_CHANNEL=<channelId> node tests/compat/djs.mjs
//
// The three values may also be given as arguments, in that order. It reads
// two messages, sends one, reacts to it with 👍 and asks who it is, then
// prints one JSON line with what came back and exits 0; on any error it
// prints the error (and every answer seen so far) as one JSON line on stdout
// and exits 1.
import { REST, RESTEvents } from '@discordjs/rest';
import { Routes } from 'discord-api-types/v10';

const [argApi, argToken, argChannel] = process.argv.slice(2);
const api = process.env.DJS_API ?? argApi;
const token = process.env.DJS_TOKEN ?? argToken;
const channel = process.env.DJS_CHANNEL ?? argChannel;

function finish(code, line) {
  process.stdout.write(`${JSON.stringify(line)}\n`, () => process.exit(code));
}

if (!api || !token || !channel) {
  finish(2, { error: 'usage: DJS_API=... DJS_TOKEN=... DJS_CHANNEL=... node djs.mjs' });
} else {
  // Every answer, as the library saw it: what it asked for and the status.
  const responses = [];

  // No retries and a short timeout, and a rate limit is an error rather
  // than a wait: a failure shows up at once, not after silent retrying.
  const rest = new REST({
    version: '10',
    api,
    retries: 0,
    timeout: 5_000,
    rejectOnRateLimit: () => true,
  }).setToken(token);
  rest.on(RESTEvents.Response, (request, response) => {
    responses.push({
      method: request.method.toUpperCase(),
      path: request.path,
      status: response.status,
    });
  });

  const statusOf = (method, pathPart) =>
    responses.find((r) => r.method === method && r.path.includes(pathPart))?.status ?? null;

  try {
    // (a) Reading.
    const read = await rest.get(Routes.channelMessages(channel), {
      query: new URLSearchParams({ limit: '2' }),
    });

    // (b) Sending.
    const sent = await rest.post(Routes.channelMessages(channel), {
      body: { content: 'hello from discord.js' },
    });

    // (c) Reacting. Routes percent-encodes the emoji itself (discord-api-types
    // encodes every argument that is not already URL-safe).
    await rest.put(Routes.channelMessageOwnReaction(channel, sent.id, '👍'));

    // (d) Who the library is talking as, asked the way discord-api-types
    // spells it: `Routes.user('@me')` percent-encodes the `@` (`/users/%40me`).
    const me = await rest.get(Routes.user('@me'));

    finish(0, {
      read: {
        status: statusOf('GET', '/messages'),
        count: read.length,
        ids: read.map((m) => m.id),
      },
      sent: {
        status: statusOf('POST', '/messages'),
        id: sent.id,
        channel_id: sent.channel_id,
        content: sent.content,
      },
      reacted: { status: statusOf('PUT', '/reactions/') },
      me: { status: statusOf('GET', '/users/%40me'), id: me.id },
      responses,
    });
  } catch (error) {
    finish(1, {
      error: String(error?.stack ?? error),
      name: error?.name ?? null,
      status: error?.status ?? null,
      method: error?.method ?? null,
      url: error?.url ?? null,
      body: error?.rawError ?? null,
      responses,
    });
  }
}
