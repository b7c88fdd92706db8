import { serve, launchChromium } from '/work/main/tests/web/common.mjs';
const { server, url } = await serve();
const ctx = await launchChromium();
for (const remove of [false, true]) {
const page = await ctx.newPage();
await page.goto(url);
await page.click('#base');
await page.evaluate(() => { window.w = (e) => { e.preventDefault(); e.returnValue = ''; }; addEventListener('beforeunload', window.w); });
let n = 0;
page.on('dialog', (x) => { n++; console.log('dialog', x.type()); x.dismiss().catch(() => {}); });
await page.close({ runBeforeUnload: true });
await new Promise((r) => setTimeout(r, 1000));
if (remove) await page.evaluate(() => removeEventListener('beforeunload', window.w));
await page.click('#base');
const r = await page.goto('about:blank', { timeout: 3000 }).then(() => 'navigated', (e) => 'failed: ' + e.message.split('\n')[0]);
console.log('remove', remove, 'dialogs', n, r, page.url());
await page.close();
}
await ctx.close(); server.close();
