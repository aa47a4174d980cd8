// ReDoc 2.5 always draws Redocly's logo in its sidebar from cdn.redoc.ly, and has no option to leave it out.
// The API docs load nothing from another origin: that address is never given to an image, and ReDoc is told
// the image failed, as it is offline, so it leaves the logo out and keeps its "API docs by Redocly" link.
// Loaded before ReDoc's bundle.
(function () {
  "use strict";
  var foreign = /^https?:\/\/cdn\.redoc\.ly\//i;

  function refuse(image) {
    setTimeout(function () { image.dispatchEvent(new Event("error")); }, 0);
  }

  var src = Object.getOwnPropertyDescriptor(HTMLImageElement.prototype, "src");
  Object.defineProperty(HTMLImageElement.prototype, "src", {
    configurable: true,
    enumerable: src.enumerable,
    get: src.get,
    set: function (value) {
      if (foreign.test(String(value))) { refuse(this); return; }
      src.set.call(this, value);
    },
  });

  var setAttribute = Element.prototype.setAttribute;
  Element.prototype.setAttribute = function (name, value) {
    if (this instanceof HTMLImageElement && String(name).toLowerCase() === "src" && foreign.test(String(value))) {
      refuse(this);
      return;
    }
    return setAttribute.call(this, name, value);
  };
})();
