// Serves the built dashboard (build/, or the directory given) on 127.0.0.1
// and prints its URL: a static site needs nothing more, and nothing is
// downloaded to serve it.  PORT chooses the port (default: a free one).
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

const root = path.resolve(process.argv[2] ?? 'build');
const types = {
	'.html': 'text/html; charset=utf-8',
	'.js': 'text/javascript; charset=utf-8',
	'.css': 'text/css; charset=utf-8',
	'.json': 'application/json',
	'.svg': 'image/svg+xml',
	'.png': 'image/png',
	'.ico': 'image/x-icon',
	'.wasm': 'application/wasm',
	'.webmanifest': 'application/manifest+json'
};

// The file a request names, inside root only; a directory or a page's path
// without extension is its index.html.
function resolve(url) {
	const pathname = decodeURIComponent(new URL(url, 'http://localhost').pathname);
	const file = path.join(root, path.normalize(pathname));
	if (file !== root && !file.startsWith(root + path.sep)) return null;
	for (const candidate of [file, path.join(file, 'index.html'), file + '.html']) {
		if (fs.existsSync(candidate) && fs.statSync(candidate).isFile()) return candidate;
	}
	return null;
}

const server = http.createServer((req, res) => {
	let file;
	try {
		file = resolve(req.url);
	} catch {
		file = null;
	}
	if (!file) {
		res.writeHead(404, { 'Content-Type': 'text/plain' });
		res.end('not found\n');
		return;
	}
	res.writeHead(200, {
		'Content-Type': types[path.extname(file)] ?? 'application/octet-stream'
	});
	fs.createReadStream(file).pipe(res);
});
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
	console.log(`http://127.0.0.1:${server.address().port}/`);
});
